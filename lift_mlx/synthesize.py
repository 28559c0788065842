"""Question/answer tasks about the document, written by a local generator model.

The generator sees a window of preceding text plus a few target sentences and writes JSON
`{"qa_list": [{"question", "answer"}]}`. Many windows are decoded together through mlx-lm's
batched generation. Malformed output is dropped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx

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
    prompt_tokens: int = 0  # tokens prefilled; an instruction prefix shared by many counts once
    decode_steps: int = 0  # batched decode steps (each reads all weights once)

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


class JsonEnd:
    """Watches a generator's output and tells when its first JSON object (or list) is closed,
    so a request stops there instead of running to its token budget."""

    def __init__(self):
        self.depth = 0
        self.started = False
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> bool:
        """Consume the next piece of output; True once the JSON value is complete."""
        for ch in text:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = self.started
            elif ch in "{[":
                self.depth += 1
                self.started = True
            elif ch in "}]" and self.started:
                self.depth -= 1
                if self.depth == 0:
                    return True
        return False


def common_prefix(sequences: list[list[int]]) -> int:
    """Length of the token prefix that all `sequences` share."""
    n = min(len(s) for s in sequences)
    first = sequences[0]
    for i in range(n):
        if any(s[i] != first[i] for s in sequences):
            return i
    return n


def generator_prompts(tokenizer, windows: list[TaskWindow], settings: SynthSettings):
    return [
        prompts.chat_ids(
            tokenizer,
            prompts.generator_body(
                tokenizer, w.preceding, w.target, settings.qa_per_sentence * w.n_sentences
            ),
        )
        for w in windows
    ]


class QAStream:
    """QA generation as a sequence of small steps, so that training can run between them.

    All requests go through one mlx-lm `BatchGenerator`: up to `settings.batch_size` are
    decoded together and a finished request's slot is refilled at once (no batch waits for its
    slowest member). The instructions that every request starts with are prefilled once; their
    KV cache is handed to each request, which then prefills only its own passage. A request
    stops at its token budget, at end-of-turn, or (with `json_stop`) as soon as its JSON
    object is closed. `step()` runs one prefill chunk or one decode step for the whole batch.
    """

    def __init__(self, model, tokenizer, windows: list[TaskWindow], settings: SynthSettings,
                 json_stop: bool = True, reuse_prefix: bool = True):
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        self.tokenizer = tokenizer
        self.windows = windows
        self.settings = settings
        self.json_stop = json_stop
        self.report = SynthReport(requests=len(windows))
        self.finished = 0
        self._seen: set[str] = set()
        self._pieces: dict[int, str] = {}  # token id -> its text, decoded once
        self._gen = BatchGenerator(
            model,
            max_tokens=settings.max_tokens,
            stop_tokens=[[t] for t in tokenizer.eos_token_ids],
            sampler=make_sampler(temp=settings.temp),
            completion_batch_size=settings.batch_size,
            prefill_batch_size=settings.batch_size,
        )
        ids = generator_prompts(tokenizer, windows, settings)
        caches = self._prefix_caches(model, ids) if reuse_prefix else [None] * len(ids)
        suffixes = [p[_cached_len(c):] for p, c in zip(ids, caches)]
        self.report.prompt_tokens += sum(len(p) for p in suffixes)
        uids = self._gen.insert(suffixes, caches=caches) if windows else []
        self._window_of = dict(zip(uids, windows))
        self._tokens: dict[int, list[int]] = {u: [] for u in uids}
        self._json = {u: JsonEnd() for u in uids}
        self._start = time.perf_counter()

    def _prefix_caches(self, model, ids: list[list[int]]) -> list:
        """One prefilled KV cache per distinct instruction prefix (the instructions name the
        number of pairs, so requests about fewer sentences have their own)."""
        from mlx_lm.models.cache import make_prompt_cache

        groups: dict[int, list[int]] = {}
        for i, w in enumerate(self.windows):
            groups.setdefault(w.n_sentences, []).append(i)
        caches: list = [None] * len(ids)
        for members in groups.values():
            n = common_prefix([ids[i] for i in members])
            n = min(n, min(len(ids[i]) for i in members) - 1)  # every request keeps a token
            if n < 1:
                continue
            cache = make_prompt_cache(model)
            with mx.stream(self._gen.stream):
                model(mx.array([ids[members[0]][:n]]), cache=cache)
                mx.eval([c.state for c in cache])
            self.report.prompt_tokens += n
            for i in members:
                caches[i] = cache  # read only: the batch copies it when it merges the caches
        return caches

    @property
    def done(self) -> bool:
        return self.finished == len(self.windows)

    def _piece(self, token: int) -> str:
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = self.tokenizer.decode([token])
        return text

    def step(self) -> list[QAPair]:
        """Advance generation by one step; the QA pairs kept from requests that finished."""
        if self.done:
            return []
        _, responses = self._gen.next()
        if responses:
            self.report.decode_steps += 1
        kept, closed = [], []
        for r in responses:
            if r.finish_reason != "stop":
                self._tokens[r.uid].append(r.token)
                self.report.generated_tokens += 1
            ended = r.finish_reason is not None
            if not ended and self.json_stop and self._json[r.uid].feed(self._piece(r.token)):
                closed.append(r.uid)
                ended = True
            if ended:
                kept += self._finish(r.uid)
        if closed:
            self._gen.remove(closed)
        return kept

    def _finish(self, uid: int) -> list[QAPair]:
        self.finished += 1
        window = self._window_of[uid]
        text = self.tokenizer.decode(self._tokens.pop(uid))
        s = self.settings
        pairs = parse_qa(text)
        if not pairs:
            self.report.drop("unparsable output")
            return []
        wanted = s.qa_per_sentence * window.n_sentences
        kept = filter_pairs(pairs[:wanted], window.text, s.min_overlap, self._seen, self.report)
        self.report.kept += len(kept)
        return kept

    def close(self) -> SynthReport:
        self._gen.close()
        self.report.seconds = time.perf_counter() - self._start
        return self.report


def _cached_len(cache) -> int:
    return cache[0].offset if cache else 0


def generate_qa(
    model,
    tokenizer,
    windows: list[TaskWindow],
    settings: SynthSettings,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> tuple[list[QAPair], SynthReport]:
    """Ask the generator for QA pairs about every window, `settings.batch_size` decoded at a
    time (see `QAStream`).

    `on_batch(done, total, generated_tokens)` reports progress each time another
    `settings.batch_size` requests (or the last ones) have finished.
    """
    stream = QAStream(model, tokenizer, windows, settings)
    kept: list[QAPair] = []
    reported = 0
    while not stream.done:
        kept += stream.step()
        while on_batch and reported < stream.finished and (
            stream.finished - reported >= settings.batch_size or stream.done
        ):
            reported = min(reported + settings.batch_size, len(windows))
            on_batch(reported, len(windows), stream.report.generated_tokens)
    return kept, stream.close()
