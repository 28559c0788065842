"""Question/answer tasks about the document, written by a local generator model.

The generator sees a window of preceding text plus a few target sentences and writes JSON
`{"qa_list": [{"question", "answer"}]}`. Many windows are decoded together through mlx-lm's
batched generation. Malformed output is dropped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import prompts
from .config import SynthSettings
from .split import sentence_spans


@dataclass(frozen=True)
class TaskWindow:
    preceding: str  # text before the target, up to window_chars
    target: str  # the sentence(s) to ask about
    n_sentences: int = 1

    @property
    def text(self) -> str:
        return f"{self.preceding} {self.target}"


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass
class SynthReport:
    requests: int = 0
    generated_tokens: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    seconds: float = 0.0
    cached: bool = False

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


def task_windows(text: str, sentences_per_task: int, window_chars: int) -> list[TaskWindow]:
    """Groups of target sentences, each with the text that precedes it."""
    spans = sentence_spans(text)
    out = []
    for i in range(0, len(spans), sentences_per_task):
        group = spans[i : i + sentences_per_task]
        start, end = group[0][0], group[-1][1]
        preceding = text[max(0, start - window_chars) : start]
        if start > window_chars:  # start the window on a word boundary
            preceding = preceding.split(" ", 1)[-1]
        out.append(TaskWindow(preceding.strip(), text[start:end].strip(), len(group)))
    return out


_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_PAIR = re.compile(
    r'"question"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"answer"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL
)


def parse_qa(output: str) -> list[QAPair]:
    """QA pairs from a generator's output: tolerant of code fences, text around the JSON,
    a bare list, and output cut off mid-JSON (complete pairs are still recovered)."""
    text = _FENCE.sub("", output)
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"[\[{]", text)]:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        items = obj.get("qa_list", obj.get("qa_pairs")) if isinstance(obj, dict) else obj
        if isinstance(items, list):
            pairs = [
                QAPair(str(it.get("question", "")), str(it.get("answer", "")))
                for it in items
                if isinstance(it, dict)
            ]
            if pairs:
                return pairs
    # Truncated or otherwise broken JSON: take every complete question/answer pair.
    pairs = []
    for q, a in _PAIR.findall(text):
        try:
            pairs.append(QAPair(json.loads(f'"{q}"'), json.loads(f'"{a}"')))
        except json.JSONDecodeError:
            continue
    return pairs


_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def grounded(answer: str, window: str, min_overlap: float) -> bool:
    """True when at least `min_overlap` of the answer's words occur in the window."""
    words = _words(answer)
    if not words:
        return False
    source = set(_words(window))
    return sum(w in source for w in words) / len(words) >= min_overlap


def filter_pairs(
    pairs: list[QAPair], window: str, min_overlap: float, seen: set[str], report: SynthReport
) -> list[QAPair]:
    """Keep non-empty, new, grounded pairs; count the rest by reason. Updates `seen`."""
    kept = []
    for p in pairs:
        q, a = p.question.strip(), p.answer.strip()
        key = " ".join(_words(q))
        if not q or not a or not key:
            report.drop("empty")
        elif key in seen:
            report.drop("duplicate")
        elif not grounded(a, window, min_overlap):
            report.drop("ungrounded")
        else:
            seen.add(key)
            kept.append(QAPair(q, a))
    return kept


def cache_key(doc_sha: str, generator_fingerprint: str, settings: SynthSettings) -> str:
    blob = json.dumps(
        [doc_sha, generator_fingerprint, prompts.GENERATOR_PROMPT_VERSION, asdict(settings)],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_cached(path: Path) -> list[QAPair] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return [QAPair(d["question"], d["answer"]) for d in data["qa_pairs"]]


def save_cached(path: Path, pairs: list[QAPair], report: SynthReport) -> None:
    from .store import write_atomic

    data = {"qa_pairs": [asdict(p) for p in pairs], "report": asdict(report)}
    write_atomic(path, json.dumps(data, indent=1))


def generate_qa(
    model,
    tokenizer,
    windows: list[TaskWindow],
    settings: SynthSettings,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> tuple[list[QAPair], SynthReport]:
    """Ask the generator for QA pairs about every window, `settings.batch_size` at a time.

    `on_batch(done, total, generated_tokens)` reports progress after each batch.
    """
    import time

    from mlx_lm import batch_generate
    from mlx_lm.sample_utils import make_sampler

    report = SynthReport()
    start = time.perf_counter()
    seen: set[str] = set()
    kept: list[QAPair] = []
    sampler = make_sampler(temp=settings.temp)
    for i in range(0, len(windows), settings.batch_size):
        chunk = windows[i : i + settings.batch_size]
        prompt_ids = [
            prompts.chat_ids(
                tokenizer,
                prompts.generator_body(
                    tokenizer, w.preceding, w.target, settings.qa_per_sentence * w.n_sentences
                ),
            )
            for w in chunk
        ]
        result = batch_generate(
            model, tokenizer, prompt_ids, max_tokens=settings.max_tokens, sampler=sampler,
            return_token_ids=True,
        )
        report.requests += len(chunk)
        report.generated_tokens += sum(len(t) for t in result.token_ids)
        for w, text in zip(chunk, result.texts):
            pairs = parse_qa(text)
            if not pairs:
                report.drop("unparsable output")
                continue
            wanted = settings.qa_per_sentence * w.n_sentences
            kept += filter_pairs(pairs[:wanted], w.text, settings.min_overlap, seen, report)
        if on_batch:
            on_batch(min(i + settings.batch_size, len(windows)), len(windows),
                     report.generated_tokens)
    report.kept = len(kept)
    report.seconds = time.perf_counter() - start
    return kept, report
