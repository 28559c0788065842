"""Needle in a haystack: hide one fictional fact at a chosen depth of filler text, ask for it.

The filler is `data/haystack.txt` (project-written prose, rebuilt by scripts/make_haystack.py);
the answer is scored by keyword match, as in the paper's NIAH runs from 1k to 128k tokens.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from ..errors import LiftError
from .datasets import EvalDoc, Question

# Paper: 10 depths from the start to the end of the document, as fractions.
DEFAULT_DEPTHS = tuple(round(i / 9, 3) for i in range(10))

# A sentence ends at . ! or ? (maybe followed by a closing quote or bracket) and whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*\s+")


@dataclass
class Needle:
    text: str  # the sentence hidden in the haystack
    question: str
    keywords: list[str] = field(default_factory=list)  # all must appear in a correct answer


DEFAULT_NEEDLES = [
    Needle(
        "The secret ingredient of the lighthouse keeper's stew is smoked cardamom.",
        "What is the secret ingredient of the lighthouse keeper's stew?",
        ["smoked cardamom"],
    ),
    Needle(
        "The password to the old observatory on Marrow Hill is velvet heron.",
        "What is the password to the old observatory on Marrow Hill?",
        ["velvet heron"],
    ),
    Needle(
        "Captain Ilse Varga named her first sailboat the Tangerine Otter.",
        "What did Captain Ilse Varga name her first sailboat?",
        ["Tangerine Otter"],
    ),
    Needle(
        "The rarest stamp in the Halloway collection shows a purple giraffe playing chess.",
        "What does the rarest stamp in the Halloway collection show?",
        ["purple giraffe", "chess"],
    ),
]


def load_haystack() -> str:
    """The shipped filler text (about 220 KB of expository prose)."""
    return resources.files("lift_mlx").joinpath("data/haystack.txt").read_text(encoding="utf-8")


def _sentence_ends(text: str) -> list[int]:
    """Positions where a prefix of `text` ends after a whole sentence (before the whitespace)."""
    ends = [m.start() + len(m.group(0).rstrip()) for m in _SENTENCE_END.finditer(text)]
    return ends + [len(text.rstrip())]


def _sentence_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in _SENTENCE_END.finditer(text) if m.end() < len(text)]


def _prefix(haystack: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest run of whole sentences from the haystack's start with at most `budget` tokens.

    The haystack is repeated when it is shorter than the budget (128k tokens is ~3 copies).
    """
    one = haystack.strip()
    total = count_tokens(one)
    if total <= 0:
        raise LiftError("the haystack is empty; give filler text to hide the needle in")
    text = "\n\n".join([one] * (budget // total + 1))
    ends = _sentence_ends(text)
    # Binary search: count_tokens may be a real tokenizer, too slow to call once per sentence.
    lo, hi, best = 0, len(ends) - 1, -1
    while lo <= hi:
        mid = (lo + hi) // 2
        if count_tokens(text[: ends[mid]]) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best < 0:
        raise LiftError(f"{budget} tokens cannot hold one sentence of the haystack; ask for more")
    return text[: ends[best]]


def build_niah(
    haystack: str,
    needle: Needle,
    n_tokens: int,
    depth: float,
    count_tokens: Callable[[str], int],
) -> tuple[str, int]:
    """A document of about n_tokens tokens with the needle at a sentence boundary near `depth`.

    `depth` is a fraction of the document (0.0 = start, 1.0 = end). Returns (document, char
    offset of the needle). The document may fall short of n_tokens by up to one sentence.
    """
    if not 0.0 <= depth <= 1.0:
        raise LiftError(
            f"depth {depth} is not a fraction between 0.0 (start) and 1.0 (end); "
            "for a percentage, divide it by 100"
        )
    budget = n_tokens - count_tokens(needle.text)
    if budget <= 0:
        raise LiftError(f"{n_tokens} tokens cannot hold the needle; ask for a longer document")
    hay = _prefix(haystack, budget, count_tokens)
    # Candidate places: the start of every sentence, and the very end.
    places = _sentence_starts(hay) + [len(hay)]
    at = min(places, key=lambda p: abs(p - depth * len(hay)))
    if at == len(hay):
        return f"{hay} {needle.text}", len(hay) + 1
    return f"{hay[:at]}{needle.text} {hay[at:]}", at


def niah_set(
    lengths: Sequence[int],
    depths: Sequence[float],
    needles: Sequence[Needle],
    count_tokens: Callable[[str], int],
    haystack: str | None = None,
) -> list[EvalDoc]:
    """One EvalDoc per (length, depth), the needles taken in turn; haystack defaults to the
    shipped one."""
    if not needles:
        raise LiftError("no needles given; use niah.DEFAULT_NEEDLES or write your own")
    if haystack is None:
        haystack = load_haystack()
    docs = []
    for i, (length, depth) in enumerate(itertools.product(lengths, depths)):
        needle = needles[i % len(needles)]
        document, offset = build_niah(haystack, needle, length, depth, count_tokens)
        doc_id = f"niah-{length}-{depth:.3g}"
        question = Question(
            id=doc_id,
            question=needle.question,
            answers=[needle.text],
            type="niah",
            keywords=list(needle.keywords),
            meta={"length": length, "depth": depth, "offset": offset},
        )
        docs.append(EvalDoc(doc_id, document, [question], source="niah"))
    return docs
