"""Task kinds: what an absorb trains on, each a `Task` (base.py) that turns the document, and
the generator where it needs one, into training samples, picked by name (`--tasks`).

- `recite` (recite.py): the document's segments, each after a head+tail view (the paper's).
- `qa` (qa.py): question/answer pairs written by the generator while training runs (the
  paper's core task), cached.
- `cloze` (cloze.py): each sentence asked back with one of its names or numbers as the
  answer, made by rule.
- `phrases` (phrases.py): each sentence asked back for a quoted term, a literal (an option, a
  path, a file) or its rarest phrase, made by rule: what prose states in words.

Adding a kind: one module here whose `TASK` is a `Task` (every module of the package is
imported and registered below), or `register(task)` from outside the package.
"""

from __future__ import annotations

from ..errors import LiftError
from ..registry import add, defined_in
from .base import Arriving, Task, TaskInput

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make `task` known by its name (to `--tasks` and absorb), in its `order`."""
    return add(TASKS, task)


for _task in defined_in(__name__, __path__, "TASK"):
    register(_task)


def tasks_named(names: tuple[str, ...]) -> list[Task]:
    """The registered tasks called `names`, in their order; a LiftError for an unknown one."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise LiftError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    return [t for t in TASKS.values() if t.name in names]


__all__ = ["TASKS", "Arriving", "Task", "TaskInput", "register", "tasks_named"]
