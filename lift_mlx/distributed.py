"""One absorb across several processes that `mlx.launch` started (one per Mac): which rank this
process is, its rows of each global batch, and the few exchanges an absorb makes with the
other ranks.

Data parallel as mlx-lm's LoRA trainer does it: every rank builds the same samples in the same
order and takes its rows of every global batch; the gradients are summed over the ranks before
the one update, so every rank holds the same adapter and the run is the single-process run at
the same global batch. Without a launcher `world()` is `SINGLE` and nothing here exchanges
anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .errors import LiftError
from .samples import Batch

# What mlx.launch sets in each process it starts: the ring and jaccl backends' rank, MPI's.
LAUNCHED = ("MLX_RANK", "OMPI_COMM_WORLD_RANK")
# MLX's backends open their errors with their name: "[ring] connection to a peer was lost".
BACKEND_ERRORS = ("[ring]", "[jaccl]", "[mpi]", "[nccl]")
# A rank signalled while MLX holds it waiting for the others (Python's handler cannot run
# until the wait ends) leaves on its own this long after the signal.
GRACE_S = 2.0


class PeerLost(LiftError):
    """Another rank stopped (interrupted, killed, failed) or cannot be reached."""


@dataclass(frozen=True)
class World:
    """The ranks of one absorb; `group` None is this process alone."""

    group: mx.distributed.Group | None = None

    @property
    def rank(self) -> int:
        return self.group.rank() if self.group is not None else 0

    @property
    def size(self) -> int:
        return self.group.size() if self.group is not None else 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"

    def check_batch(self, batch_size: int) -> None:
        """LiftError unless every rank gets the same number of rows of each batch."""
        if batch_size % self.size:
            fits = -(-batch_size // self.size) * self.size
            raise LiftError(f"--batch-size {batch_size} does not split over {self.size} ranks; "
                            f"use a multiple of {self.size} (e.g. --batch-size {fits})")

    def share(self, batch: Batch) -> Batch:
        """This rank's rows of a global batch: the rank-th run of batch_size / size rows."""
        if self.size == 1:
            return batch
        return batch.row_chunks(len(batch.inputs) // self.size)[self.rank]

    def sum(self, tree):
        """`tree` (arrays, nested as mlx trees are) summed over the ranks: one exchange per
        dtype, the arrays laid end to end, as `mlx.nn.average_gradients` groups them."""
        if self.size == 1:
            return tree
        flat = tree_flatten(tree)
        by_dtype: dict = {}
        for i, (_, a) in enumerate(flat):
            by_dtype.setdefault(a.dtype, []).append(i)
        summed = [None] * len(flat)
        for members in by_dtype.values():
            joined = mx.concatenate([flat[i][1].reshape(-1) for i in members])
            joined = mx.distributed.all_sum(joined, group=self.group)
            ends = np.cumsum([flat[i][1].size for i in members]).tolist()
            for i, part in zip(members, mx.split(joined, ends[:-1])):
                summed[i] = part.reshape(flat[i][1].shape)
        return tree_unflatten([(key, a) for (key, _), a in zip(flat, summed)])

    def gather(self, value) -> list:
        """Every rank's `value` (anything JSON holds), in rank order."""
        if self.size == 1:
            return [value]
        data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
        lengths = mx.distributed.all_gather(mx.array([len(data)]), group=self.group).tolist()
        padded = np.zeros(max(lengths), dtype=np.uint8)
        padded[:len(data)] = data
        joined = np.array(mx.distributed.all_gather(mx.array(padded), group=self.group))
        rows = joined.reshape(self.size, -1)
        return [json.loads(row[:n].tobytes()) for row, n in zip(rows, lengths)]

    def first(self, value):
        """Rank 0's `value`, on every rank."""
        return value if self.size == 1 else self.gather(value if self.rank == 0 else None)[0]

    def agree(self, **facts: str) -> None:
        """LiftError, the same on every rank, unless all ranks have the same `facts` (the
        document's hash, the model's fingerprint, the settings' key)."""
        if self.size == 1:
            return
        every = self.gather(facts)
        for name in facts:
            values = [f.get(name) for f in every]
            if len(set(values)) > 1:
                held = ", ".join(f"rank {r} {str(v)[:12]}" for r, v in enumerate(values))
                raise LiftError(f"the ranks disagree on the {name} ({held}); give every rank "
                                "the same DOC, --model and options")


SINGLE = World()
_world: World | None = None


def _launched_alone() -> bool:
    """mlx.launch -n 1 (the ring backend): the hosts file it hands over is blank."""
    path = os.environ.get("MLX_HOSTFILE", "")
    try:
        return not path or not Path(path).read_text().strip()
    except OSError:
        return False


def world() -> World:
    """This process's place among the ranks that mlx.launch started; SINGLE without one."""
    global _world
    if _world is None:
        if not any(name in os.environ for name in LAUNCHED):
            _world = SINGLE
        else:
            try:
                group = mx.distributed.init(strict=True)
            except RuntimeError as e:
                if not _launched_alone():
                    rank = os.environ.get("MLX_RANK", "?")
                    raise PeerLost(f"rank {rank}: could not join the other ranks ({e}); check "
                                   "the hosts file and that every rank was started") from None
                group = None
            _world = World(group) if group is not None and group.size() > 1 else SINGLE
    return _world


class _Stopping:
    """How a rank's process stops, installed once: the first SIGINT or SIGTERM raises
    KeyboardInterrupt (as Ctrl-C does), later ones change nothing (a stopping rank hears the
    launcher's SIGTERM next), nor does any once the rank has lost a peer (`together`), lest the
    launcher's SIGTERM cut its one line short. Where MLX holds the main thread (a step, or a
    wait for the other ranks) Python's handler cannot run: the rank then says so in one line and
    leaves GRACE_S after the signal; else it leaves GRACE_S after its handler ran, whatever
    Python's exit waits for. Either way its sockets close and the others' exchanges fail
    (`together`)."""

    def __init__(self, world: World, say: Callable[[str], None]):
        self.world = world
        self.say = say
        self.handled = threading.Event()
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)  # the C handler writes here at once, whatever Python does
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        threading.Thread(target=self._watch, args=(read,), daemon=True).start()

    def _handle(self, signum, frame) -> None:
        if self.handled.is_set():
            return
        self.handled.set()
        raise KeyboardInterrupt

    def _watch(self, read: int) -> None:
        while os.read(read, 1)[0] not in (signal.SIGINT, signal.SIGTERM):
            pass  # another signal with a Python handler
        if self.handled.wait(GRACE_S):  # the main thread runs: it unwinds and says why
            time.sleep(GRACE_S)
        else:
            self.say(f"{self.world}: stopped by a signal while MLX held it (a step, or "
                     "waiting for the other ranks): no adapter was stored")
        sys.stderr.flush()
        os._exit(130)


_stopping: _Stopping | None = None


@contextmanager
def together(world: World, say: Callable[[str], None]) -> Iterator[None]:
    """Run a block that every rank runs in step: a rank that loses a peer raises PeerLost (one
    line, the others' fault); one interrupted stops and the others lose it (`_Stopping`)."""
    global _stopping
    if world.size == 1:
        yield
        return
    if _stopping is None and threading.current_thread() is threading.main_thread():
        _stopping = _Stopping(world, say)
    try:
        yield
    except RuntimeError as e:
        if not str(e).startswith(BACKEND_ERRORS):
            raise
        if _stopping is not None:
            _stopping.handled.set()
        raise PeerLost(f"{world}: another rank stopped or cannot be reached ({e}), so this "
                       "one stops too: no adapter was stored") from None
