"""`bm25`: the passages ranked by BM25 over their words (bm25s: sparse-matrix BM25 on numpy),
as document apps rank passages for retrieval; no model, milliseconds per question."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np

from .base import Passage, Retriever


class BM25(Retriever):
    name = "bm25"
    help = "BM25 over the passages' words"
    order = 0
    version = f"bm25s {bm25s.__version__}"

    def index(self, passages: list[Passage]) -> bm25s.BM25 | None:
        corpus = bm25s.tokenize([p.text for p in passages], stopwords="en",
                                show_progress=False)
        if not corpus.vocab:  # stop words alone ("It is. It is."): bm25s fails on them
            return None
        index = bm25s.BM25()
        index.index(corpus, show_progress=False)
        return index

    def search(self, index: bm25s.BM25, question: str) -> list[int]:
        query = bm25s.tokenize([question], stopwords="en", show_progress=False)
        if not query.ids or not query.ids[0]:  # no term of the question is a word it knows
            return []
        k = index.scores["num_docs"]
        found, scores = index.retrieve(query, k=k, show_progress=False)
        return [int(i) for i, s in zip(found[0], scores[0]) if s > 0 and np.isfinite(s)]

    def save(self, index: bm25s.BM25, folder: Path) -> None:
        index.save(folder, show_progress=False)  # arrays as .npy without pickle, vocab as JSON

    def load(self, folder: Path) -> bm25s.BM25:
        return bm25s.BM25.load(folder, show_progress=False)


RETRIEVER = BM25()
