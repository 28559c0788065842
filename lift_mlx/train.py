"""Adapter training on a frozen (possibly 4-bit) base through one compiled MLX step, and
`train`, the one driver every caller trains with: absorb, the benchmarks and the tests."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tuner.trainer import grad_checkpoint

from .adapters import kind_named
from .checkpoints import Checkpoint
from .config import TrainSettings
from .distributed import SINGLE, World
from .errors import LiftError
from .samples import (
    Batch,
    EpochScheduler,
    Sample,
    buckets_for,
    epoch_batches,
    fitted_buckets,
    make_batch,
)


def _mean(ce: mx.array, weights: mx.array, total: mx.array | None) -> mx.array:
    # `total`: the whole batch's weight, when this is one micro-batch of it
    return ce.sum() / (mx.maximum(weights.sum(), 1.0) if total is None else total)


def masked_loss(model: nn.Module, inputs, targets, mask, total=None) -> mx.array:
    """Mean cross-entropy over the target tokens only."""
    logits = model(inputs)
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * mask
    return _mean(ce, mask, total)


def output_layer(model: nn.Module):
    """The model's hidden-states -> logits map, when it is split as mlx-lm's llama-like models
    are (`model.model` then `lm_head` or the tied embedding), else None."""
    body = getattr(model, "model", None)
    if body is None or not hasattr(body, "embed_tokens"):
        return None
    head = getattr(model, "lm_head", None)
    return head if head is not None else body.embed_tokens.as_linear


def target_loss(model: nn.Module, inputs, index, target_ids, weights, total=None) -> mx.array:
    """`masked_loss` with the output layer run only at the target positions (`index` into the
    flattened batch). With a 49k-token vocabulary the logits of every position are most of a
    small model's training memory."""
    hidden = model.model(inputs)
    hidden = mx.take(hidden.reshape(-1, hidden.shape[-1]), index, axis=0)
    logits = output_layer(model)(hidden)
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), target_ids) * weights
    return _mean(ce, weights, total)


def _splits_like_its_call(model: nn.Module) -> bool:
    """True when `model.model` + `output_layer` computes what `model(...)` does (checked on a
    few tokens, so a model with extra steps, e.g. logit soft-capping, keeps the plain loss)."""
    if output_layer(model) is None:
        return False
    probe = mx.array([[1, 2, 3, 4]])
    try:
        split = output_layer(model)(model.model(probe))
        full = model(probe)
    except Exception:  # an architecture whose pieces do not run alone
        return False
    return split.shape == full.shape and bool(mx.allclose(split, full, atol=1e-4, rtol=1e-3))


def _target_index(mask: np.ndarray, targets: np.ndarray):
    """Flat positions of the targets in a batch, their token ids and their weights (the
    mask's values there)."""
    flat = np.flatnonzero(mask.reshape(-1)).astype(np.int32)
    if not len(flat):  # a rank's rows of a short last batch: one position, of weight 0
        flat = np.zeros(1, dtype=np.int32)
    return flat, targets.reshape(-1)[flat], mask.reshape(-1)[flat]


def use_compile(settings: TrainSettings) -> bool:
    # Compiled CPU steps are no faster than eager and the first costs a g++ run.
    if settings.compile is not None:
        return settings.compile
    return mx.default_device().type == mx.DeviceType.gpu


_CHECKPOINTED: dict[type, type] = {}  # block class -> its subclass with a checkpointed call


def enable_grad_checkpoint(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of storing them.

    mlx-lm's `grad_checkpoint` patches the block's class; it gets a subclass made for the
    purpose, so only this model's blocks are affected, not a base view used for generation.
    """
    for layer in model.layers:
        cls = type(layer)
        if cls in _CHECKPOINTED.values():
            continue
        if cls not in _CHECKPOINTED:
            _CHECKPOINTED[cls] = type(cls.__name__, (cls,), {"__module__": cls.__module__})
            layer.__class__ = _CHECKPOINTED[cls]
            grad_checkpoint(layer)
        layer.__class__ = _CHECKPOINTED[cls]


def disable_grad_checkpoint(model: nn.Module) -> None:
    """Give the blocks their plain call back (answering needs no recomputation)."""
    originals = {sub: cls for cls, sub in _CHECKPOINTED.items()}
    for layer in model.layers:
        if type(layer) in originals:
            layer.__class__ = originals[type(layer)]


@dataclass
class TrainReport:
    steps: int = 0
    tokens: int = 0  # real tokens processed (prompt + targets), padding excluded
    target_tokens: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    # times the step was traced (compiled): once per length; with micro-batches once per
    # length for each of the first, middle and last part (two parts: twice, more: three)
    traces: int = 0
    sample_views: int = 0  # samples trained on, counted once per step they are in

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail) if tail else math.nan


LR_WARMUP = 0.05  # of the steps, for a schedule other than constant
LR_FLOOR = 0.1  # of --lr, where the cosine ends


def scheduled_lr(settings: TrainSettings, step: int, total: int) -> float:
    """The learning rate of step `step` (counted from 0) of `total` (`settings.lr_schedule`):
    constant; or cosine, a linear warm-up over the first LR_WARMUP of the steps, then a cosine
    from --lr down to LR_FLOOR of it at the last step."""
    if settings.lr_schedule == "constant" or total <= 1:
        return settings.lr
    warm = max(1, round(LR_WARMUP * total))
    if step < warm:
        return settings.lr * (step + 1) / warm
    done = min(1.0, (step - warm) / max(1, total - 1 - warm))
    return settings.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * done)))


class Trainer:
    """Holds the optimizer and the (compiled) step for one model; call `step` per batch. With
    several ranks (`world`), each runs its rows of every batch and the gradients are summed
    over the ranks before the update."""

    def __init__(self, model: nn.Module, settings: TrainSettings, world: World = SINGLE):
        self.model = model
        self.settings = settings
        self.world = world
        self.optimizer = kind_named(settings.adapter).optimizer(settings)  # AdamW, its betas
        # Create the moments now: state that appears at the first update would change the
        # compiled function's inputs and force a second trace.
        self.optimizer.init(model.trainable_parameters())
        self.traces = 0
        self.compiled = use_compile(settings)
        # Eager steps only: a compiled step needs fixed shapes, and the number of targets
        # varies from batch to batch.
        self.split = not self.compiled and _splits_like_its_call(model)
        if settings.grad_checkpoint:
            enable_grad_checkpoint(model)
        loss_and_grad = nn.value_and_grad(model, target_loss if self.split else masked_loss)

        # One step for the whole batch (no gradients in, update) and for each micro-batch of
        # one (the sum of the parts before it in, the update on the last part only).
        def step(batch, prev_grads, do_update):
            self.traces += 1  # Python side effect: runs once per trace, not per call
            loss, grads = loss_and_grad(model, *batch)
            if prev_grads is not None:
                grads = tree_map(mx.add, grads, prev_grads)
            if do_update:
                # each rank's loss is its share of the whole batch's mean: the sum over the
                # ranks is the single-process gradient
                grads = world.sum(grads)
                grads, _ = optim.clip_grad_norm(grads, settings.grad_clip)
                self.optimizer.update(model, grads)
                grads = None
            return loss, grads

        self.micro = settings.micro_batch
        if self.compiled:
            # the random state too, as mlx-lm's trainer has it (dropout); the model state is
            # an output even of the parts that do not update: value_and_grad leaves traced
            # parameters in it. `prev_grads is None` and `do_update` are constants of a trace.
            state = [model.state, self.optimizer.state, mx.random.state]
            step = mx.compile(step, inputs=state, outputs=state)
        self._step = step

    def _arrays(self, batch: Batch, total: float | None = None) -> list[mx.array]:
        if self.split:
            arrays = (batch.inputs, *_target_index(batch.mask, batch.targets))
        else:
            arrays = (batch.inputs, batch.targets, batch.mask)
        return [mx.array(a) for a in arrays] + ([] if total is None else [mx.array(total)])

    def _prepared(self, batch: Batch) -> Batch:
        if not self.compiled:  # eager: padding is pure cost, any shape is free
            batch = batch.trimmed()
        if self.settings.loss_mean == "samples":
            batch = batch.per_sample()
        return batch

    def submit(self, batch: Batch) -> mx.array:
        """Start a step on the device and return its (not yet computed) loss."""
        rows = self._prepared(self.world.share(batch))  # this rank's: all of them in one process
        whole = rows if self.world.size == 1 else self._prepared(batch)
        parts = rows.row_chunks(self.micro) if 0 < self.micro < len(rows.inputs) else [rows]
        # each part's loss is its share of the whole (over the ranks: the global) batch's mean
        total = (max(float(whole.mask.sum()), 1.0) if len(parts) > 1 or self.world.size > 1
                 else None)
        loss, grads = None, None
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            part_loss, grads = self._step(self._arrays(part, total), grads, last)
            loss = part_loss if loss is None else loss + part_loss
            if not last:
                mx.eval(loss, grads)  # this part's activations are freed before the next
        loss = self.world.sum(loss)  # the global batch's loss, as one process has it
        mx.async_eval(loss, self.model.state, self.optimizer.state)
        return loss

    def step(self, batch: Batch) -> mx.array:
        loss = self.submit(batch)
        mx.eval(loss)
        return loss


class Diverged(LiftError):
    """Training reached a non-finite loss or adapter weight: nothing it made may be kept."""


def _diverged(settings: TrainSettings, what: str) -> Diverged:
    return Diverged(f"training diverged ({what}), so no adapter was stored; absorb again with "
                    f"a lower --lr (this run's: {settings.lr:g}) or --scale "
                    f"(this run's: {settings.scale:g})")


class TrainLoop:
    """Feeds batches to a Trainer with one step in flight: while the device computes step i,
    the host pads batch i+1 and reads the loss of step i-1 (the only host sync, for progress).
    """

    def __init__(self, model: nn.Module, settings: TrainSettings, total: int = 0,
                 on_step: Callable[[int, int, float, int], None] | None = None,
                 world: World = SINGLE):
        self.model = model
        self.trainer = Trainer(model, settings, world)
        self.report = TrainReport()
        self.total = total
        self.on_step = on_step
        self._in_flight: tuple[mx.array, int] | None = None
        self._resumed = (0, 0)  # the steps and tokens a resumed checkpoint held
        self._start = time.perf_counter()
        model.train()

    def __call__(self, batch: Batch, n_samples: int | None = None) -> None:
        settings = self.trainer.settings
        if settings.lr_schedule != "constant":  # a value in the step's inputs: no new trace
            self.trainer.optimizer.learning_rate = scheduled_lr(
                settings, self.report.steps, max(self.total, self.report.steps + 1))
        loss = self.trainer.submit(batch)
        self.settle()
        self._in_flight = (loss, batch.n_tokens)
        r = self.report
        r.steps += 1
        r.target_tokens += int(batch.mask.sum())
        r.sample_views += n_samples if n_samples is not None else int(batch.mask.any(1).sum())

    def settle(self) -> None:
        """Wait for the step in flight and record its loss."""
        if self._in_flight is None:
            return
        loss, n_tokens = self._in_flight
        self._in_flight = None
        r = self.report
        r.losses.append(loss.item())
        if not math.isfinite(r.losses[-1]):
            raise _diverged(self.trainer.settings, f"the loss of step {len(r.losses)} is "
                                                   f"{r.losses[-1]}")
        r.tokens += n_tokens
        if self.on_step:  # this run's steps, as a bar's rate and ETA must count them
            steps, tokens = self._resumed
            self.on_step(len(r.losses) - steps, max(self.total, r.steps) - steps, r.losses[-1],
                         r.tokens - tokens)

    def resumed(self) -> None:
        """Mark the report, just restored from a checkpoint, as the start of this run."""
        self._resumed = (self.report.steps, self.report.tokens)

    def close(self) -> TrainReport:
        """Wait for the last step and return the report (the model is left in eval mode);
        Diverged if the last update left a weight that is not finite."""
        self.settle()
        weights = tree_flatten(self.model.trainable_parameters())
        if weights and not mx.all(mx.array([mx.all(mx.isfinite(w)) for _, w in weights])):
            raise _diverged(self.trainer.settings, "the last step left weights that are not "
                                                   "finite")
        self.model.eval()
        disable_grad_checkpoint(self.model)
        self.report.seconds += time.perf_counter() - self._start
        self.report.traces = self.trainer.traces
        return self.report


def train(
    model: nn.Module,
    samples: list[Sample],
    settings: TrainSettings,
    pad_id: int,
    on_step: Callable[[int, int, float, int], None] | None = None,
    *,
    arriving: Iterator[list[Sample]] | None = None,
    longest: int = 0,
    total: int = 0,
    checkpoint: Checkpoint | None = None,
    max_steps: int | None = None,
    world: World = SINGLE,
) -> TrainReport:
    """Train the model's adapter on `samples` and on those `arriving` yields while training
    runs, each `settings.epochs` times (see `EpochScheduler`).

    `arriving` does a little work per `next()` (absorb: one generator step) and yields the
    samples it finished; `longest` bounds their length. Generation and training alternate on
    one device: each step is started asynchronously and `arriving` runs while it computes,
    for about as long as the previous step took. Measured on MLX's CPU backend with a
    4-layer model, interleaving this way took 0.95x the time of generating then training,
    while a producer thread next to the training thread took 1.17x: the two compete for the
    same cores, and a thread adds lock contention for no gain.

    `on_step(steps, total_steps, loss, tokens)` follows every step (progress bars): the steps
    and tokens of this call (a resumed run counts from its checkpoint) and the steps it runs
    in all, exact once every sample is in (until then `total`, the caller's estimate).
    `checkpoint` keeps the run every `checkpoint.every` steps and resumes the one it kept: the
    samples it holds are not added again when offered, so the rest of the run is the one an
    uninterrupted run trains. `max_steps` stops early (benchmarks). With several ranks
    (`world`), every rank passes the same samples and trains its rows of each batch
    (`Trainer`); `arriving`, if any, must have done its work (how many steps run between two
    `next()` depends on time, which no two ranks share).
    """
    if not samples and arriving is None:
        raise ValueError("no training samples")
    buckets = fitted_buckets(max([len(s) for s in samples] + [longest, 2]) - 1)
    sched = EpochScheduler(settings.batch_size, settings.epochs, buckets,
                           random.Random(settings.seed), {"recite": settings.recite_epochs})
    loop = TrainLoop(model, settings, total, on_step, world)
    kept = Counter()  # samples a resumed checkpoint already holds, offered again
    if checkpoint is not None and checkpoint.resume(loop, sched):
        kept.update(sched.arrived)
        loop.resumed()

    def add(new: list[Sample]) -> None:
        fresh = []
        for s in new:
            if kept[s] > 0:
                kept[s] -= 1
            else:
                fresh.append(s)
        sched.add(fresh)

    def run(due: tuple[int, list[Sample]]) -> None:
        length, chunk = due
        loop(make_batch(chunk, settings.batch_size, length, pad_id), len(chunk))
        if checkpoint is not None and checkpoint.due(loop.report.steps):
            loop.settle()
            checkpoint.save(loop, sched)

    def stopped() -> bool:
        return max_steps is not None and loop.report.steps >= max_steps

    def all_in() -> None:  # no sample can arrive any more: the steps left are known
        loop.total = loop.report.steps + sched.steps_left()
        if max_steps is not None:
            loop.total = min(loop.total, max(max_steps, loop.report.steps))

    add(samples)
    burst = 0.0
    if arriving is not None:
        add(next(arriving, []))  # what is at hand at once (cached or kept QA pairs)
    else:
        all_in()
    while arriving is not None and not stopped():
        due = sched.next_batch(final=False)
        cycle = time.perf_counter()
        if due:
            run(due)
        work = time.perf_counter()
        while True:  # at least one step of work, then as long as the last cycle took
            new = next(arriving, None)
            if new is None:
                arriving = None
                all_in()
                break
            add(new)
            if not due or time.perf_counter() - work >= 0.9 * burst:
                break
        burst = time.perf_counter() - cycle if due else burst
    while not stopped() and (due := sched.next_batch(final=True)):
        run(due)
    return loop.close()


def mean_nll(model: nn.Module, samples: list[Sample], pad_id: int, batch_size: int = 4) -> float:
    """Mean negative log-likelihood per target token over `samples` (no training)."""
    total, count = 0.0, 0.0
    buckets = buckets_for(max(len(s) for s in samples) - 1)
    for batch in epoch_batches(samples, batch_size, buckets, pad_id, random.Random(0)):
        n = float(batch.mask.sum())
        loss = masked_loss(model, mx.array(batch.inputs), mx.array(batch.targets),
                           mx.array(batch.mask))
        total += loss.item() * n
        count += n
    return total / max(count, 1.0)
