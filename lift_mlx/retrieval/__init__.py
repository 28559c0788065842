"""Retrievers: a document cut into passages of whole sentences, and the passages that match a
question, for the prompt of an answer (`--retrieve`) and the citations shown with it.

- `bm25` (bm25.py): BM25 over the passages' words.

Adding a retriever (an embedding model's, where one is at hand): one module here whose
`RETRIEVER` is a `Retriever` (base.py), or `register(retriever)` from outside the package.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from .. import store
from ..errors import LiftError
from ..registry import add, defined_in
from .base import Passage, PassageIndex, Retriever, passages
from .stored import save_index, stored_index

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
    found, by = passages(tokenizer, text, passage_len), retriever_named(retriever)
    return PassageIndex(found, by, by.index(found) if found else None, passage_len)


def entry_index(tokenizer, text: str, entry: Path, passage_len: int, *, keep: bool,
                retriever: str = DEFAULT) -> PassageIndex:
    """The index of `text`, the document of the store entry at `entry`: the one it holds if
    it was made so, else built; with `keep`, one built is written into the entry (where it
    is writable and no other process holds it) for the next answer to read."""
    by = retriever_named(retriever)
    index = stored_index(entry, text, passage_len, by)
    if index is None:
        index = passage_index(tokenizer, text, passage_len, retriever)
        if keep:
            store.add_index(entry, partial(save_index, index))
    return index


__all__ = ["RETRIEVERS", "Passage", "PassageIndex", "Retriever", "entry_index", "passage_index",
           "passages", "register", "retriever_named", "save_index"]
