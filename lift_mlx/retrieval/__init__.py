"""Retrievers: a document cut into passages of whole sentences, and the passages that match a
question, for the prompt of an answer (`--retrieve`) and the citations shown with it.

- `bm25` (bm25.py): BM25 over the passages' words.

Adding a retriever (an embedding model's, where one is at hand): one module here whose
`RETRIEVER` is a `Retriever` (base.py), or `register(retriever)` from outside the package.
"""

from __future__ import annotations

from ..errors import LiftError
from ..registry import add, defined_in
from .base import Passage, PassageIndex, Retriever, passages

RETRIEVERS: dict[str, Retriever] = {}


def register(retriever: Retriever) -> Retriever:
    """Make `retriever` known by its name, in its `order`."""
    return add(RETRIEVERS, retriever)


for _retriever in defined_in(__name__, __path__, "RETRIEVER"):
    register(_retriever)


def retriever_named(name: str) -> Retriever:
    """The registered retriever called `name`, or a LiftError naming those there are."""
    if name not in RETRIEVERS:
        raise LiftError(f"unknown retriever {name!r}; choose one of {', '.join(RETRIEVERS)}")
    return RETRIEVERS[name]


DEFAULT = "bm25"


def passage_index(tokenizer, text: str, passage_len: int,
                  retriever: str = DEFAULT) -> PassageIndex:
    """`text`'s passages of about `passage_len` tokens, indexed by the retriever named."""
    return PassageIndex(tokenizer, text, passage_len, retriever_named(retriever))


__all__ = ["RETRIEVERS", "Passage", "PassageIndex", "Retriever", "passage_index", "passages",
           "register", "retriever_named"]
