"""Training samples (token ids + loss mask) and fixed-shape batches.

A sample's `mask[i]` is 1 where token i is a training target. Batches are padded to a small
fixed set of lengths (`buckets`) and always hold `batch_size` rows, so a compiled training step
sees a bounded number of shapes and never recompiles after warm-up.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from . import prompts
from .answer import passages_prompt
from .split import head_tail, head_tail_context, segments

if TYPE_CHECKING:
    from .retrieval import PassageIndex

# The window a reader sample's prompt is built for: no limit but its budget (an answer's
# prompt is cut to the model's window as `ask` cuts it).
LONGEST_PROMPT = 1 << 30


@dataclass(frozen=True)
class Sample:
    tokens: tuple[int, ...]
    mask: tuple[int, ...]
    kind: str  # "recite" or "qa"

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_targets(self) -> int:
        return sum(self.mask)


def _sample(prompt: list[int], target: list[int], kind: str) -> Sample:
    return Sample(tuple(prompt + target), (0,) * len(prompt) + (1,) * len(target), kind)


def end_of_turn(tokenizer) -> list[int]:
    """The token that closes an assistant turn (the chat template's eos)."""
    return [tokenizer.eos_token_id]


def qa_sample(tokenizer, question: str, answer: str,
              context: list[int] | None = None) -> Sample:
    """`user: question` / `assistant: answer`, in the wording `ask` uses (with `context`, a
    document view before the question, as `ask` shows one); loss on the answer."""
    prompt = prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question, context))
    target = prompts.encode(tokenizer, answer.strip()) + end_of_turn(tokenizer)
    return _sample(prompt, target, "qa")


class QASamples:
    """QA samples of pairs in `ask`'s layout: a `share` of them (picked by `rng`, in the order
    the pairs come) with the document's head+tail view of `context_len` tokens before the
    question, and with a `reader` the reader's share with retrieved passages instead."""

    def __init__(self, tokenizer, doc_tokens: list[int], context_len: int, share: float,
                 rng: random.Random, reader: Reader | None = None):
        self.tokenizer, self.share, self.rng, self.reader = tokenizer, share, rng, reader
        self.view = None
        if context_len > 0 and share > 0:
            self.view = head_tail_context(tokenizer, doc_tokens, context_len) or None

    def __call__(self, pairs) -> list[Sample]:
        out = []
        for p in pairs:
            # no draw where every sample is bare: the rng's sequence stays as it was
            draw = self.rng.random() if self.view is not None or self.reader else 1.0
            if self.view is not None and draw < self.share:
                out.append(qa_sample(self.tokenizer, p.question, p.answer, self.view))
            elif self.reader is not None and draw >= 1.0 - self.reader.share:
                out.append(self.reader.sample(p, self.rng))
            else:
                out.append(qa_sample(self.tokenizer, p.question, p.answer))
        return out


@dataclass
class Reader:
    """QA samples laid out as `ask --retrieve` lays out its prompt: the passages of the
    document that match the question (at most `budget` tokens, in document order), then the
    question (RAFT's recipe for a model that reads retrieved text well). An `oracle` share of
    them hold a passage with the answer (the best-ranked one that has it, where retrieval left
    it out); the rest only passages without it, so that the model also learns to answer from
    what it has absorbed when retrieval misses."""

    tokenizer: object
    index: PassageIndex
    share: float
    oracle: float
    budget: int

    def sample(self, pair, rng: random.Random) -> Sample:
        ranked = self.index.ranked(pair.question)
        answer = pair.answer.strip().lower()
        holds = [p for p in ranked if answer and answer in p.text.lower()]
        if rng.random() < self.oracle:
            if holds:  # first, so that the budget always keeps it
                ranked = [holds[0]] + [p for p in ranked if p is not holds[0]]
        else:
            ranked = [p for p in ranked if p not in holds]
        prompt, _ = passages_prompt(self.tokenizer, pair.question, ranked, self.budget,
                                    window=LONGEST_PROMPT, max_tokens=0)
        target = prompts.encode(self.tokenizer, pair.answer.strip())
        return _sample(prompt, target + end_of_turn(self.tokenizer), "qa")


def recite_samples(
    tokenizer,
    doc_tokens: list[int],
    seg_len: int,
    stride: int,
    context_len: int,
    rng: random.Random,
) -> list[Sample]:
    """One sample per segment: optional head+tail context, the recite instruction, the segment.

    The context (contextualized training) splits its budget at random between the document's
    head and tail, as at answer time the model also sees a head+tail view.
    """
    separator = prompts.encode(tokenizer, prompts.ELLIPSIS)
    out = []
    for seg in segments(doc_tokens, seg_len, stride):
        context = None
        if context_len > 0:
            budget = min(context_len, len(doc_tokens))
            if budget >= len(separator) + 2:
                context = head_tail(doc_tokens, budget, separator, rng.uniform(0.0, 1.0))
        prompt = prompts.chat_ids(tokenizer, prompts.recite_body(tokenizer, context))
        out.append(_sample(prompt, list(seg) + end_of_turn(tokenizer), "recite"))
    return out


def buckets_for(max_len: int, smallest: int = 64) -> list[int]:
    """Padded lengths: powers of two from `smallest` up to the first that holds `max_len`."""
    sizes = [smallest]
    while sizes[-1] < max_len:
        sizes.append(sizes[-1] * 2)
    return sizes


@dataclass
class Batch:
    inputs: np.ndarray  # [B, L] int32: tokens[:-1], padded
    targets: np.ndarray  # [B, L] int32: tokens[1:], padded
    mask: np.ndarray  # [B, L] float32: 1 where targets[i] is trained on
    n_tokens: int  # real (unpadded) tokens processed
    rows: int = 0  # rows that hold a sample (the rest are padding)
    longest: int = 0  # the longest row's real length

    def trimmed(self) -> Batch:
        """The batch without its padding rows and columns (for steps that are not compiled,
        where a shape costs nothing and padding costs compute)."""
        rows, cols = max(self.rows, 1), max(self.longest, 1)
        return Batch(self.inputs[:rows, :cols], self.targets[:rows, :cols],
                     self.mask[:rows, :cols], self.n_tokens, rows, cols)

    def row_chunks(self, size: int) -> list[Batch]:
        """The batch cut into batches of `size` rows or fewer (micro-batches)."""
        return [Batch(self.inputs[i:i + size], self.targets[i:i + size],
                      self.mask[i:i + size], 0, min(size, max(self.rows - i, 0)), self.longest)
                for i in range(0, len(self.inputs), size)]

    def per_sample(self) -> Batch:
        """The mask scaled so each row's targets sum to 1: a masked mean is then the mean of
        the samples' own mean losses."""
        counts = self.mask.sum(axis=1, keepdims=True)
        mask = np.divide(self.mask, counts, out=np.zeros_like(self.mask), where=counts > 0)
        return replace(self, mask=mask)


def make_batch(samples: list[Sample], batch_size: int, length: int, pad_id: int) -> Batch:
    """Pad `samples` (at most batch_size) to a [batch_size, length] batch; spare rows are empty."""
    inputs = np.full((batch_size, length), pad_id, dtype=np.int32)
    targets = np.full((batch_size, length), pad_id, dtype=np.int32)
    mask = np.zeros((batch_size, length), dtype=np.float32)
    n = 0
    for row, s in enumerate(samples):
        t = np.asarray(s.tokens[: length + 1], dtype=np.int32)
        k = len(t) - 1
        inputs[row, :k] = t[:-1]
        targets[row, :k] = t[1:]
        mask[row, :k] = np.asarray(s.mask[1 : k + 1], dtype=np.float32)
        n += k
    longest = max((min(len(s), length + 1) - 1 for s in samples), default=0)
    return Batch(inputs, targets, mask, n, len(samples), longest)


def fitted_buckets(max_len: int, smallest: int = 64, multiple: int = 32) -> list[int]:
    """Powers of two below `max_len`, then `max_len` rounded up to `multiple`: the longest
    samples (recite segments, which all have about the same length) get a tight fit instead
    of up to twice their length in padding."""
    top = max(smallest, -(-max_len // multiple) * multiple)
    return [b for b in buckets_for(top, smallest) if b < top] + [top]


def bucket_of(n_tokens: int, buckets: list[int]) -> int:
    """The shortest padded length that holds a sample of `n_tokens` (inputs are one shorter)."""
    return next((b for b in buckets if b >= n_tokens - 1), buckets[-1])


def plan_epoch(
    samples: list[Sample], batch_size: int, buckets: list[int], rng: random.Random
) -> list[tuple[int, list[Sample]]]:
    """Shuffle, group samples by bucket (the shortest padded length that holds them), chunk."""
    by_bucket: dict[int, list[Sample]] = {}
    for s in samples:
        by_bucket.setdefault(bucket_of(len(s), buckets), []).append(s)
    plan = []
    for length, group in by_bucket.items():
        rng.shuffle(group)
        plan += [(length, group[i : i + batch_size]) for i in range(0, len(group), batch_size)]
    rng.shuffle(plan)
    return plan


def epoch_batches(
    samples: list[Sample], batch_size: int, buckets: list[int], pad_id: int, rng: random.Random
) -> Iterator[Batch]:
    for length, chunk in plan_epoch(samples, batch_size, buckets, rng):
        yield make_batch(chunk, batch_size, length, pad_id)


class EpochScheduler:
    """Batches for samples that arrive while training runs, each sample trained `epochs` times.

    The rule that keeps the epoch count exact although the number of samples is not known at
    the start: a batch holds samples of one bucket that have been trained equally often (their
    view count); the lowest view count with a full batch goes first, so late arrivals catch up
    with the rest; partial batches wait until `final` (no more samples can arrive), then drain
    in the same order. Given all samples at once with `final`, this is `epochs` shuffled passes
    in at most `epochs` x the steps `plan_epoch` makes (leftovers of one pass may fill a batch
    of the next). `epochs_of` gives some kinds of sample (by `Sample.kind`) a count of their
    own: a group is keyed by its samples' count too, so the rule holds for each.
    """

    def __init__(self, batch_size: int, epochs: int, buckets: list[int], rng: random.Random,
                 epochs_of: dict[str, int] | None = None):
        self.batch_size = batch_size
        self.epochs = epochs
        self.buckets = buckets
        self.rng = rng
        self.epochs_of = {k: n for k, n in (epochs_of or {}).items() if n > 0}
        # (views, bucket, epochs) -> samples seen `views` times, owed `epochs` in all
        self._pending: dict[tuple[int, int, int], list[Sample]] = {}
        self.arrived: list[Sample] = []  # every sample added, in order
        self.views = 0  # sample-views handed out so far

    @property
    def added(self) -> int:
        return len(self.arrived)

    def add(self, samples: list[Sample]) -> None:
        for s in samples:
            key = (0, bucket_of(len(s), self.buckets), self.epochs_of.get(s.kind, self.epochs))
            self._pending.setdefault(key, []).append(s)
        self.arrived += samples

    def position(self) -> dict:
        """Where the schedule stands, as JSON: what each sample (by its place in `arrived`)
        is still owed, and the random state; `resume` continues from it."""
        place = {id(s): i for i, s in enumerate(self.arrived)}
        pending = [[views, length, [place[id(s)] for s in group], epochs]
                   for (views, length, epochs), group in self._pending.items() if group]
        return {"pending": pending, "views": self.views, "rng": self.rng.getstate()}

    def resume(self, arrived: list[Sample], position: dict) -> None:
        """Continue where `position` (of a schedule given the samples `arrived`) stood."""
        self.arrived = list(arrived)
        self.views = position["views"]
        self._pending = {}
        for views, length, places, *owed in position["pending"]:
            # a checkpoint written before counts per kind existed owes every sample `epochs`
            key = (views, length, owed[0] if owed else self.epochs)
            self._pending[key] = [self.arrived[i] for i in places]
        version, internal, gauss = position["rng"]
        self.rng.setstate((version, tuple(internal), gauss))

    @property
    def remaining(self) -> int:
        """Sample-views still to hand out for the samples added so far."""
        owed = sum(self.epochs_of.get(s.kind, self.epochs) for s in self.arrived)
        return owed - self.views

    def steps_left(self) -> int:
        """The batches still due for the samples added so far, once no more can arrive: the
        rule of `next_batch(final=True)` on the group sizes alone. Each bucket takes its own
        batches whatever the order among buckets, so the random choice changes no count."""
        sizes = {k: len(group) for k, group in self._pending.items() if group}
        steps = 0
        while sizes:
            keys = sorted(sizes)
            key = next((k for k in keys if sizes[k] >= self.batch_size), keys[0])
            taken = min(sizes[key], self.batch_size)
            sizes[key] -= taken
            if not sizes[key]:
                del sizes[key]
            views, length, epochs = key
            if views + 1 < epochs:
                later = (views + 1, length, epochs)
                sizes[later] = sizes.get(later, 0) + taken
            steps += 1
        return steps

    def next_batch(self, final: bool) -> tuple[int, list[Sample]] | None:
        """(padded length, samples) of the next batch, or None when none is due yet."""
        keys = sorted(k for k, group in self._pending.items() if group)
        full = [k for k in keys if len(self._pending[k]) >= self.batch_size]
        if full:
            views = full[0][0]
            key = self.rng.choice([k for k in full if k[0] == views])
        elif final and keys:
            key = keys[0]
        else:
            return None
        group = self._pending[key]
        self.rng.shuffle(group)
        chunk, self._pending[key] = group[: self.batch_size], group[self.batch_size :]
        views, length, epochs = key
        if views + 1 < epochs:
            self._pending.setdefault((views + 1, length, epochs), []).extend(chunk)
        self.views += len(chunk)
        return length, chunk
