"""What a task kind is: it turns the document, and the generator where it needs one, into
training samples, some ready at once and some arriving while training runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlx.nn as nn

from ..distributed import SINGLE, World
from ..ingest import Document
from ..models import LoadedModel
from ..progress import Progress
from ..samples import QASamples, Sample

if TYPE_CHECKING:  # config lists the task kinds: it imports this package
    from ..config import Settings


@dataclass
class TaskInput:
    """What every task of an absorb makes its samples from."""

    doc: Document
    doc_tokens: list[int]
    tokenizer: object
    settings: Settings
    qa: QASamples  # question/answer pairs -> samples in `ask`'s layout (one rng for all tasks)
    generator: LoadedModel  # the model that writes tasks: the base, unless --generator
    generator_model: nn.Module  # what generates: a plain view while the base's adapter trains
    progress: Progress
    world: World = SINGLE  # the ranks absorbing together: they share out the generation


class Arriving:
    """Samples that a task makes while training runs, a little work per `step()`."""

    longest = 0  # tokens of the longest sample it can make (the batch shapes must hold it)
    report = None  # what its generator did (a SynthReport), for the absorb's report

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def step(self) -> None:
        """Do one small piece of the work (one generator step)."""
        raise NotImplementedError

    def take(self) -> list[Sample]:
        """The samples made since the last call."""
        raise NotImplementedError

    def expected(self) -> int:
        """How many samples it makes in all (an estimate until it is done)."""
        raise NotImplementedError

    def made(self) -> int:
        """How many samples it has made so far."""
        raise NotImplementedError

    def run(self) -> None:
        """Do all the work now (the sequential schedule, `--sequential`)."""
        while not self.done:
            self.step()

    def finish(self) -> None:
        """Called once training has taken the last of its samples."""


class Task:
    """A kind of training sample (`--tasks NAME,...`)."""

    name: str
    help: str  # one line for `--tasks`'s help
    order: int = 100  # where it stands in lists, and whose samples come first
    # Keys the adapters trained on its samples: give the task a new version whenever the
    # samples it makes change, so stored adapters are not reused for the new ones. "" (the
    # first tasks') keys nothing, so adapters stored before versions existed keep their keys.
    version: str = ""

    def samples(self, given: TaskInput) -> list[Sample]:
        """The samples ready at once."""
        return []

    def arriving(self, given: TaskInput) -> Arriving | None:
        """The samples that arrive while training runs; None where there are none."""
        return None

    def interrupted(self, doc: Document, generator: LoadedModel, settings: Settings) -> str:
        """A sentence on what an interrupted absorb kept of this task's work ("" if nothing)."""
        return ""
