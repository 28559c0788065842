"""The arms of an evaluation, declared once: how each answers a question (with which adapter,
and whether its prompt holds the document, as a view or as retrieved passages). `run_eval`,
the summary's order and the help and choices of `lift-mlx eval --arms` all read this table;
adding an arm is one entry in ARMS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings

# adapter -> the absorb settings it is made with, from the run's settings; each document is
# absorbed once per adapter, and every arm naming the adapter answers with it
ADAPTERS: dict[str, Callable[[Settings], Settings]] = {
    "lift": lambda settings: settings,  # the document's adapter, as `absorb` makes it
    # the paper's fine-tuning baseline: trained on the text's segments only
    "raw-ft": lambda settings: settings.replace(tasks=("recite",)),
}


@dataclass(frozen=True)
class Arm:
    """How an arm answers; every arm shares the prompt wording and greedy decoding."""

    help: str  # its line in `lift-mlx eval --help`
    adapter: str | None = None  # a key of ADAPTERS; None answers with the plain base
    context: bool = False  # the prompt holds a head+tail view of the document
    retrieve: bool = False  # with context: the passages that match the question instead
    whole: bool = False  # the whole document or nothing: skipped where it does not fit
    # (memory arm, reading arm): answers with the first arm's answer where a passage the
    # second arm's prompt holds backs it (`answer.backing`), else with the second's, as
    # `--check` answers; made from those two arms' records, which are answered for it
    checks: tuple[str, str] | None = None


ARMS: dict[str, Arm] = {
    "base": Arm("the base model, the question alone: what it knows without the document, "
                "and what a question costs without it"),
    "icl-trunc": Arm("the base model, head+tail of the document that fits the window",
                     context=True),
    "icl-full": Arm("the base model, the whole document; skipped where it does not fit",
                    context=True, whole=True),
    "lift": Arm("the document's adapter, the question alone", adapter="lift"),
    "lift+icl": Arm("the same adapter, head+tail of the document in the prompt",
                    adapter="lift", context=True),
    "raw-ft": Arm("an adapter trained on the text's segments only (--tasks recite)",
                  adapter="raw-ft"),
    "rag": Arm("the base model, the passages that match the question (BM25), as document "
               "apps answer", context=True, retrieve=True),
    "lift+rag": Arm("the document's adapter with the same passages", adapter="lift",
                    context=True, retrieve=True),
    "checked": Arm("lift's answer where a passage of rag's prompt backs it, else rag's "
                   "(--check)", adapter="lift", context=True, retrieve=True,
                   checks=("lift", "rag")),
}
