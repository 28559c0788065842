"""Checkpoints of a training run, so that an interrupted absorb resumes where it stopped.

Every `checkpoint_every` steps a run keeps the adapter's trainable arrays, the optimizer's
state, the samples it has been given and the schedule's position (what each sample is still
owed, the random state), in $LIFT_MLX_HOME/checkpoints/KEY. A run of the same key resumes
there: the same batches follow in the same order, so it ends with the adapter that an
uninterrupted run makes. `state.json` is written last and names its step's files, so a run
stopped while saving leaves the checkpoint before whole. It also counts the runs that did the
work it holds and their seconds, so that the adapter's report has what the absorb cost in all.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

from . import store
from .samples import Sample

FORMAT = 1
STATE_FILE = "state.json"
_REPORT = ("steps", "tokens", "target_tokens", "losses", "seconds", "sample_views")


@dataclass
class Spent:
    """Absorb runs and their seconds (model loading excluded)."""

    runs: int = 0
    seconds: float = 0.0


class Checkpoint:
    """The checkpoints of one run in `folder`, every `every` steps (0: never);
    `trainable(model)` gives the arrays to keep (the adapter kind's). This run's clock starts
    when it is made (the absorb makes it once the model is loaded)."""

    def __init__(self, folder: Path, every: int, trainable: Callable[[object], dict]):
        self.folder = Path(folder)
        self.every = every
        self.trainable = trainable
        self.started = time.perf_counter()
        # the runs before this one whose work this one continues: set by `resume`, or to none
        # by this run's first save when it started over
        self.before: Spent | None = None

    def spent(self) -> Spent:
        """The runs that did this run's work so far, this one included, and their seconds."""
        before = self.before or Spent()
        return Spent(before.runs + 1, before.seconds + time.perf_counter() - self.started)

    def due(self, steps: int) -> bool:
        return self.every > 0 and steps % self.every == 0

    def state(self) -> dict | None:
        """What the kept checkpoint says (its step, schedule, report), or None."""
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("format") == FORMAT else None

    def save(self, loop, sched) -> None:
        """Keep the run of `loop` (a settled TrainLoop) and its schedule `sched`."""
        report = loop.report
        stem = f"step-{report.steps:08d}"
        try:
            with store.writing(self.folder):  # a full disk: one line, not a traceback
                self.folder.mkdir(parents=True, exist_ok=True)
                mx.save_safetensors(str(self.folder / f"{stem}.adapter.safetensors"),
                                    self.trainable(loop.model))
                mx.save_safetensors(str(self.folder / f"{stem}.optimizer.safetensors"),
                                    dict(tree_flatten(loop.trainer.optimizer.state)))
                _save_samples(self.folder / f"{stem}.samples.npz", sched.arrived)
                if self.before is None:
                    self.before = Spent()
                state = {"format": FORMAT, "step": report.steps, "stem": stem,
                         "buckets": sched.buckets, "schedule": sched.position(),
                         "report": {k: getattr(report, k) for k in _REPORT},
                         "spent": asdict(self.spent())}
                store.write_atomic(self.folder / STATE_FILE, json.dumps(state))
        except BaseException:
            for part in self.folder.glob(f"{stem}.*"):  # the checkpoint before stays whole
                part.unlink(missing_ok=True)
            raise
        for old in self.folder.glob("step-*"):
            if not old.name.startswith(f"{stem}."):
                old.unlink(missing_ok=True)

    def resume(self, loop, sched) -> bool:
        """Put the kept run back into `loop` (a fresh TrainLoop on the model, its adapter
        attached) and `sched`; False (and nothing changed) where there is none that fits."""
        state = self.state()
        if state is None or state["buckets"] != sched.buckets:
            return False
        stem = self.folder / state["stem"]
        try:
            weights = mx.load(f"{stem}.adapter.safetensors")
            moments = mx.load(f"{stem}.optimizer.safetensors")
            arrived = _load_samples(Path(f"{stem}.samples.npz"))
        except (OSError, ValueError, RuntimeError, KeyError):
            return False
        expected = self.trainable(loop.model)
        optimizer = loop.trainer.optimizer
        paths = []
        tree_map_with_path(lambda path, _: paths.append(path), optimizer.state)
        if ({k: v.shape for k, v in weights.items()} != {k: v.shape for k, v in expected.items()}
                or set(moments) != set(paths)):
            return False
        loop.model.load_weights(list(weights.items()), strict=False)
        restored = tree_map_with_path(lambda path, _: moments[path], optimizer.state)
        optimizer.state.update(restored)  # in place: a compiled step holds this dict
        sched.resume(arrived, state["schedule"])
        for name, value in state["report"].items():
            setattr(loop.report, name, value)
        self.before = _spent(state)
        return True

    def count_interrupted(self) -> None:
        """Add this run's seconds up to now to the kept checkpoint, as an interrupted run's:
        the work after its last save cost time too."""
        state = self.state()
        if state is None:
            return
        if self.before is None:  # stopped before it resumed the checkpoint (while writing QA)
            self.before = _spent(state)
        state["spent"] = asdict(self.spent())
        try:
            store.write_atomic(self.folder / STATE_FILE, json.dumps(state))
        except OSError:  # a full disk: the checkpoint stays whole, only this time goes uncounted
            pass

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _spent(state: dict) -> Spent:
    """The runs and seconds a checkpoint's state counts; one written before lift-mlx counted
    them: one run, of its training's seconds."""
    spent = state.get("spent")
    if isinstance(spent, dict):
        return Spent(int(spent["runs"]), float(spent["seconds"]))
    return Spent(1, float(state["report"]["seconds"]))


def _save_samples(path: Path, samples: list[Sample]) -> None:
    tokens = [t for s in samples for t in s.tokens]
    mask = [m for s in samples for m in s.mask]
    with open(path, "wb") as f:
        np.savez(f, tokens=np.array(tokens, dtype=np.int32), mask=np.array(mask, dtype=np.int8),
                 lengths=np.array([len(s) for s in samples], dtype=np.int64),
                 kinds=np.array([s.kind for s in samples]))


def _load_samples(path: Path) -> list[Sample]:
    with np.load(path) as data:
        tokens, mask = data["tokens"].tolist(), data["mask"].tolist()
        ends = np.cumsum(data["lengths"]).tolist()
        kinds = data["kinds"].tolist()
    starts = [0, *ends[:-1]]
    return [Sample(tuple(tokens[a:b]), tuple(mask[a:b]), kind)
            for a, b, kind in zip(starts, ends, kinds)]
