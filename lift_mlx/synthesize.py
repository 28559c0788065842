"""Question/answer tasks about the document, written by a local generator model.

The generator sees a window of preceding text plus a few target sentences and writes pairs in
the format of its style (`generator_styles`: JSON for instruct models, worked examples in a
line format for small ones). Many requests are decoded together through mlx-lm's batched
generation. Malformed output is dropped and counted, never fatal.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import mlx.core as mx

from .answer import question_prompt
from .eval.metrics import answer_contains
from .generator_styles import GeneratorStyle, QAPair, resolve_style
from .prompts import encode
from .split import sentence_spans

if TYPE_CHECKING:  # the settings' module lists the task kinds, which use this one
    from .config import SynthSettings


@dataclass(frozen=True)
class TaskWindow:
    preceding: str  # text before the target, up to window_chars
    target: str  # the sentence(s) to ask about
    n_sentences: int = 1

    @property
    def text(self) -> str:
        return f"{self.preceding} {self.target}"


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


_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    """Lowercased words, possessives as their noun ("Vell's" -> "vell")."""
    return [w.lower().removesuffix("'s") for w in _WORD.findall(text)]


# Words that occur in almost any window: an answer like "the owl" or "in 1827" must not count
# as grounded because "the" or "in" occurs there.
FUNCTION_WORDS = frozenset(
    "a an the in on at of to by for from with and or is was are were it its this that".split())


def grounded(answer: str, window: str, min_overlap: float) -> bool:
    """True when at least `min_overlap` of the answer's words occur in the window (function
    words aside, unless the answer has nothing else)."""
    words = _words(answer)
    words = [w for w in words if w not in FUNCTION_WORDS] or words
    if not words:
        return False
    source = set(_words(window))
    return sum(w in source for w in words) / len(words) >= min_overlap


def question_key(question: str) -> str:
    """What two questions share when one is a duplicate of the other."""
    return " ".join(_words(question))


def filter_pairs(
    pairs: list[QAPair], window: str, min_overlap: float, seen: set[str], report: SynthReport
) -> list[QAPair]:
    """Keep non-empty, new, grounded pairs whose answer is not given away by the question;
    count the rest by reason. Updates `seen`."""
    kept = []
    for p in pairs:
        q, a = p.question.strip(), p.answer.strip()
        key = question_key(q)
        if not q or not a or not key:
            report.drop("empty")
        elif key in seen:
            report.drop("duplicate")
        elif not grounded(a, window, min_overlap):
            report.drop("ungrounded")
        elif grounded(a, q, 1.0):  # "What is Marta Vell's name?" -> "Marta Vell" teaches nothing
            report.drop("answer in question")
        else:
            seen.add(key)
            kept.append(QAPair(q, a))
    return kept


# Keys cached pairs with the style's version: give it a new one whenever `filter_pairs`,
# `grounded` or the function words change which pairs are kept. (The first is the hash of their
# code that keyed the cache before.)
FILTER_VERSION = "5625f3dca3204f60"


def generator_requests(windows: list[TaskWindow], settings: SynthSettings,
                       style: GeneratorStyle) -> list[tuple[TaskWindow, int]]:
    """(window, variant) of every request: as many about each window as its style makes for
    the pairs wanted (one for all, one per pair, or none where there is nothing to ask)."""
    out = []
    for w in windows:
        n = settings.qa_per_sentence * w.n_sentences
        out += [(w, k) for k in range(style.requests(w.preceding, w.target, n))]
    return out


def generator_prompts(tokenizer, requests: list[tuple[TaskWindow, int]],
                      settings: SynthSettings, style: GeneratorStyle) -> list[list[int]]:
    return [style.prompt(tokenizer, w.preceding, w.target,
                         settings.qa_per_sentence * w.n_sentences, k) for w, k in requests]


# Requests whose prompts open with the same this many tokens share one prefilled prefix.
PREFIX_KEY = 48
CHECK_TOKENS = 24  # reply budget of a verify_qa check: a sentence that holds the answer


def _line_end(piece: str) -> bool:
    return "\n" in piece


class QAStream:
    """QA generation as a sequence of small steps, so that training can run between them.

    All requests go through one mlx-lm `BatchGenerator`: up to `settings.generator_batch_size` are
    decoded together and a finished request's slot is refilled at once (no batch waits for its
    slowest member). The part of the prompt that a group of requests shares (instructions or
    worked examples) is prefilled once; its KV cache is handed to each request, which then
    prefills only its own passage. A request stops at its token budget, at end-of-turn, or
    (with `stop_early`) as soon as its style's stop rule sees the pairs complete. With
    `verify_qa`, each kept pair's question is then asked back in the same batch, its target
    sentence as the document. `step()` runs one prefill chunk or one decode step for the
    whole batch.
    """

    def __init__(self, model, tokenizer, windows: list[TaskWindow], settings: SynthSettings,
                 style: GeneratorStyle | None = None, stop_early: bool = True,
                 reuse_prefix: bool = True, done: frozenset[int] = frozenset(),
                 seen: set[str] | None = None):
        # mlx_lm imports transformers (~1 s), and this module is on the path of
        # `lift-mlx --help` (the task kinds): deferred so that it stays fast
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        self.tokenizer = tokenizer
        self.settings = settings
        self.style = style or resolve_style(settings.style, model)
        self.requests = generator_requests(windows, settings, self.style)
        self.stop_early = stop_early
        self.report = SynthReport(requests=len(self.requests))
        # Requests finished by an earlier, interrupted run (`done`, by index) are not made
        # again; `seen` holds the questions it kept, so duplicates still count as such.
        self.finished = len(done)
        self.finished_ids: list[int] = sorted(done)
        self._seen: set[str] = set(seen or ())
        self.kept_by_request: dict[int, list[QAPair]] = {}  # request index -> its kept pairs
        # With settings.verify_qa, a request's pairs wait for their checks (asked in the same
        # batch generator); the request counts as finished once the last one is answered.
        self._checks: dict[int, tuple[int, int, QAPair]] = {}  # uid -> request, index, pair
        self._pending: dict[int, list] = {}  # request -> its pairs, None where a check failed
        self._left: dict[int, int] = {}  # request -> its checks not answered yet
        self._pieces: dict[int, str] = {}  # token id -> its text, decoded once
        self._gen = BatchGenerator(
            model,
            max_tokens=settings.max_tokens,
            stop_tokens=[[t] for t in tokenizer.eos_token_ids],
            sampler=make_sampler(temp=settings.temp),
            completion_batch_size=settings.generator_batch_size,
            prefill_batch_size=settings.generator_batch_size,
        )
        todo = [i for i in range(len(self.requests)) if i not in done]
        ids = generator_prompts(tokenizer, [self.requests[i] for i in todo], settings,
                                self.style)
        caches = self._prefix_caches(model, ids) if reuse_prefix else [None] * len(ids)
        suffixes = [p[_cached_len(c):] for p, c in zip(ids, caches)]
        self.report.prompt_tokens += sum(len(p) for p in suffixes)
        uids = self._gen.insert(suffixes, caches=caches) if ids else []
        self._request_of = dict(zip(uids, todo))
        self._tokens: dict[int, list[int]] = {u: [] for u in uids}
        self._stop = {u: self.style.stop() for u in uids}
        self._start = time.perf_counter()

    def _prefix_caches(self, model, ids: list[list[int]]) -> list:
        """One prefilled KV cache per group of requests that open alike (the same
        instructions, or the same examples in the same order), holding what they share."""
        from mlx_lm.models.cache import make_prompt_cache  # deferred: see __init__
        from mlx_lm.utils import common_prefix_len

        groups: dict[tuple[int, ...], list[int]] = {}
        for i, prompt in enumerate(ids):
            groups.setdefault(tuple(prompt[:PREFIX_KEY]), []).append(i)
        caches: list = [None] * len(ids)
        for members in groups.values():
            first = ids[members[0]]
            n = min(common_prefix_len(first, ids[i]) for i in members)
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
        return self.finished == len(self.requests)

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
            check = r.uid in self._checks
            stop = _line_end if check else self._stop[r.uid]
            if not ended and self.stop_early and stop(self._piece(r.token)):
                closed.append(r.uid)
                ended = True
            if ended:
                kept += self._checked(r.uid) if check else self._finish(r.uid)
        if closed:
            self._gen.remove(closed)
        return kept

    def _finish(self, uid: int) -> list[QAPair]:
        request = self._request_of[uid]
        window, variant = self.requests[request]
        text = self.tokenizer.decode(self._tokens.pop(uid))
        s = self.settings
        pairs = self.style.parse(text, window.preceding, window.target, variant)
        if not pairs:
            self.report.drop("unparsable output")
            return self._done(request, [])
        wanted = s.qa_per_sentence * window.n_sentences
        kept = filter_pairs(pairs[:wanted], window.text, s.min_overlap, self._seen, self.report)
        if not (s.verify_qa and kept):
            return self._done(request, kept)
        self._ask_back(request, window, kept)
        return []

    def _done(self, request: int, kept: list[QAPair]) -> list[QAPair]:
        self.finished += 1
        self.finished_ids.append(request)
        self.report.kept += len(kept)
        self.kept_by_request[request] = kept
        return kept

    def _ask_back(self, request: int, window: TaskWindow, pairs: list[QAPair]) -> None:
        """Ask each pair's question of the generator, its target sentence as the document."""
        context = encode(self.tokenizer, window.target)
        ids = [question_prompt(self.tokenizer, p.question, context, 10**9, CHECK_TOKENS)
               for p in pairs]
        self.report.prompt_tokens += sum(len(i) for i in ids)
        uids = self._gen.insert(ids, [CHECK_TOKENS] * len(ids))
        self._pending[request] = list(pairs)
        self._left[request] = len(pairs)
        for index, (uid, pair) in enumerate(zip(uids, pairs)):
            self._checks[uid] = (request, index, pair)
            self._tokens[uid] = []

    def _checked(self, uid: int) -> list[QAPair]:
        """A check answered: its pair is kept if the reply holds the pair's answer; the
        request's kept pairs once all its checks are in."""
        request, index, pair = self._checks.pop(uid)
        reply = self.tokenizer.decode(self._tokens.pop(uid))
        if not answer_contains(reply, pair.answer):
            self.report.drop("not answered back")
            self._pending[request][index] = None
        self._left[request] -= 1
        if self._left[request]:
            return []
        del self._left[request]
        return self._done(request, [p for p in self._pending.pop(request) if p is not None])

    def close(self) -> SynthReport:
        self._gen.close()
        self.report.seconds = time.perf_counter() - self._start
        return self.report


def _cached_len(cache) -> int:
    return cache[0].offset if cache else 0
