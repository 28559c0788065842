"""The served base model: one document's adapter at a time on a view of its weights, the lock
that generation holds, and answers generated as `lift-mlx ask` prompts them.

Adapters are swapped on a view of the base's weights (absorb jobs train on the model itself
meanwhile) and the last few are kept in memory; generation holds one lock, so two requests
never share the model, its adapter or a KV cache, and runs on one long-lived thread (MLX gives
each thread that computes streams of its own, whose OS threads outlive it). From mlx-lm it uses
the generation loop (`stream_generate`), the sampling options (`make_sampler`,
`make_logits_processors`) and the LoRA layers.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from .. import adapters, library, store
from ..absorbed import reset_adapter, trained_prompting
from ..answer import about_document, document_prompt
from ..config import AnswerSettings
from ..errors import LiftError
from ..prompts import encode
from ..retrieval import Passage, PassageIndex, entry_index

ANSWER = AnswerSettings()  # how a chat is answered unless its request says else: as `ask`


class DocumentGone(LiftError):
    """The document was removed after the request found it."""


class PromptRefused(LiftError):
    """Messages that make no prompt for the served model; `code` names why."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass
class _Adapter:
    """A document's adapter in memory, with its tokens for the head+tail view."""

    key: str
    checksum: str
    config: dict
    weights: dict
    doc_tokens: list[int]
    text: str  # the document, which decides what questions are about it
    path: Path  # the entry
    prompting: object  # builds its prompts as it was trained (absorbed.trained_prompting)
    index: PassageIndex | None = None  # its passages for "retrieve", read on first use


class ServedModel:
    """The base model every request uses, with one document's adapter on it at a time."""

    def __init__(self, lm, kept: int = 4):
        reset_adapter(lm)  # the view must start as the plain base
        self.lm = lm
        self.fingerprint = lm.fingerprint
        self.model = adapters.base_view(lm.model)  # absorb jobs put their own adapter on lm.model
        self.lock = threading.Lock()
        # All of the served model's MLX work runs on this one long-lived thread: MLX gives each
        # thread that evaluates two streams of its own, each with an OS thread that outlives
        # it, so evaluating on the handler threads (one per connection) leaked two threads
        # per chat and their memory (200 chats: 9 -> 411 threads, 110 -> 254 MB; later chats
        # failed in mx.eval).
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="lift-serve-model")
        self.kept = kept
        self._cache: OrderedDict[str, _Adapter] = OrderedDict()
        self._active: _Adapter | None = None
        self._layers: dict | None = None  # the config of the adapter layers on the view

    def adapter(self, entry: library.Entry) -> _Adapter:
        """The entry's adapter, from memory or from the store after checking it (hold the
        lock); DocumentGone if it was just removed, a LiftError if it is damaged."""
        checksum = str(entry.field("checksums", store.ADAPTER_FILE, default=entry.field("created")))
        cached = self._cache.get(entry.key)
        if cached is not None and cached.checksum == checksum:
            self._cache.move_to_end(entry.key)
            return cached
        if not entry.path.is_dir():  # removed since the request found it
            raise DocumentGone(f"the document {entry.name!r} was just removed")
        try:
            store.verify(entry.path)
            config = json.loads((entry.path / store.CONFIG_FILE).read_text())
            weights = mx.load(str(entry.path / store.ADAPTER_FILE))
            mx.eval(weights)  # computed now, not in the middle of a request's first token
            text = (entry.path / store.DOCUMENT_FILE).read_text(encoding="utf-8")
        except (OSError, ValueError) as e:
            raise store.damaged(entry.path, f"unreadable: {e}") from None
        loaded = _Adapter(entry.key, checksum, config, weights, encode(self.lm.tokenizer, text),
                          text, entry.path, trained_prompting(self.lm.tokenizer, entry.meta or {}))
        self._cache[entry.key] = loaded
        while len(self._cache) > self.kept:
            self._cache.popitem(last=False)
        return loaded

    def run(self, fn: Callable, *args):
        """`fn(*args)` on the model's thread; its result, or its exception raised here."""
        return self._worker.submit(fn, *args).result()

    def stream(self, pieces: Iterator) -> Iterator:
        """The items of the generator `pieces`, each computed on the model's thread; closed
        there too when the caller stops early."""
        end = object()
        try:
            while (item := self.run(next, pieces, end)) is not end:
                yield item
        finally:
            self.run(pieces.close)

    def close(self) -> None:
        self._worker.shutdown(wait=False)

    def forget(self, key: str) -> None:
        with self.lock:
            self._cache.pop(key, None)

    def activate(self, adapter: _Adapter | None) -> None:
        """Put `adapter` (None: none) on the served model (hold the lock)."""
        if adapter is self._active:
            return
        layers = None if adapter is None else adapter.config
        if layers != self._layers:  # new layers only when their shape changes
            adapters.remove(self.model)
            if layers is not None:  # they start random, then get the adapter's weights
                _own_random_state()
                adapters.kind_of_config(layers).build(self.model, layers)
            self._layers = layers
        if adapter is not None:
            self.model.load_weights(list(adapter.weights.items()), strict=False)
        self.model.eval()
        self._active = adapter


def _own_random_state(seed: int | None = None) -> None:
    """Seed MLX's global random state here, evaluated: arrays are computed on the stream of
    the thread that made them, and the last user of the state may be another thread (an
    absorb job) whose stream this one cannot use."""
    mx.random.seed(int.from_bytes(os.urandom(7), "little") if seed is None else seed)
    mx.eval(mx.random.state)


def last_question(messages: list[dict]) -> str:
    """The last user message: the question a document's model answers (PromptRefused if it is
    missing or empty)."""
    questions = [m["content"] for m in messages if m["role"] == "user"]
    if not questions or not questions[-1].strip():
        raise PromptRefused("the last user message (the question) is empty", "empty_question")
    return questions[-1]


def route(adapter: _Adapter | None, messages: list[dict]) -> _Adapter | None:
    """The adapter that answers `messages`: none (the plain base, as `ask` answers it) where
    the question is not about the adapter's document."""
    if adapter is None or about_document(last_question(messages), adapter.text):
        return adapter
    return None


def chat_prompt(served: ServedModel, messages: list[dict], adapter: _Adapter | None, *,
                context: bool, max_tokens: int, retrieve: bool = ANSWER.retrieve,
                answers: bool = True) -> tuple[list[int], list[Passage]]:
    """Prompt ids for `messages`, and the retrieved passages they hold: with a document's
    adapter, the prompt of `lift-mlx ask` for the last user message (with `context` the
    passages that match it, or without `retrieve` the head+tail view), built as the adapter
    was trained where it `answers` (else for the plain base); without, the chat template.
    PromptRefused when there is no question or no room for `max_tokens` in the window;
    store.Damaged where the entry's index is."""
    tok, window = served.lm.tokenizer, served.lm.window
    held: list[Passage] = []
    if adapter is not None:
        question = last_question(messages)
        if context and retrieve and adapter.index is None:
            adapter.index = entry_index(tok, adapter.text, adapter.path, ANSWER.passage_len,
                                        keep=True)
        settings = replace(ANSWER, context=context, retrieve=retrieve, max_tokens=max_tokens)
        prompting = adapter.prompting if answers else tok
        prompt, held = document_prompt(prompting, question, adapter.doc_tokens, settings, window,
                                       adapter.index)
    else:
        try:
            prompt = list(tok.apply_chat_template(messages, add_generation_prompt=True))
        except Exception as e:  # the template's own complaint (roles, order)
            raise PromptRefused(f"the chat template refused the messages: {e}",
                                "invalid_messages") from None
    if len(prompt) + max_tokens > window:
        raise PromptRefused(f"the prompt ({len(prompt)} tokens) and max_tokens exceed the "
                            f"model's window of {window}", "context_length_exceeded")
    return prompt, held


@dataclass
class Sampling:
    """How `generate` picks its tokens (mlx-lm's sampler and logits processors) and where it
    stops (after `max_tokens`, or before the first of the `stops` strings)."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repetition_penalty: float  # mlx-lm's: 0 is off
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stops: list[str]
    logit_bias: dict[int, float] | None


def generate(served: ServedModel, prompt: list[int], sampling: Sampling) -> Iterator[tuple]:
    """(text, finish_reason, completion tokens) as mlx-lm generates them, cut at a stop
    string (hold the lock)."""
    s, stops = sampling, sampling.stops
    if s.seed is not None or s.temperature > 0:
        _own_random_state(s.seed)
    sampler = make_sampler(s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p)
    processors = make_logits_processors(s.logit_bias, s.repetition_penalty, 20,
                                        s.presence_penalty, 20, s.frequency_penalty, 20)
    matcher = _StopMatcher(stops)
    held, count = "", 0  # held: text that may be the start of a stop string
    for r in stream_generate(served.model, served.lm.tokenizer, prompt,
                             max_tokens=s.max_tokens, sampler=sampler,
                             logits_processors=processors or None):
        count = r.generation_tokens
        start = len(held)
        held += r.text
        cut = matcher.feed(r.text)
        if cut is not None:
            yield held[:start + cut], "stop", count
            return
        keep = matcher.partial()
        text, held = held[:len(held) - keep], held[len(held) - keep:]
        if r.finish_reason is not None:
            yield text + held, r.finish_reason, count
            return
        yield text, None, count


class _StopMatcher:
    """Where the text fed so far meets the stop strings, one character at a time (KMP): work
    linear in the text, however long the stops. A prefix rescanned per token was quadratic in
    a stop's length: a 500,000-character stop held the model 52 s for 8 tokens."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.fallback = [_fallback(stop) for stop in stops]
        self.matched = [0] * len(stops)  # how much of each stop the text ends with

    def feed(self, piece: str) -> int | None:
        """Take `piece`; the offset in it where the earliest stop completed in it starts (None:
        no stop completed)."""
        starts = []
        for n, (stop, fallback) in enumerate(zip(self.stops, self.fallback)):
            m = self.matched[n]
            for i, ch in enumerate(piece):
                while m and stop[m] != ch:
                    m = fallback[m - 1]
                m += stop[m] == ch
                if m == len(stop):
                    starts.append(i + 1 - m)
                    break
            self.matched[n] = m
        return min(starts) if starts else None

    def partial(self) -> int:
        """How many characters at the end of the text may be the start of a stop."""
        return max(self.matched, default=0)


def _fallback(stop: str) -> list[int]:
    """KMP's table: for each prefix of `stop`, the length of its longest proper prefix that is
    also its suffix."""
    table, k = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = table[k - 1]
        k += stop[i] == stop[k]
        table[i] = k
    return table
