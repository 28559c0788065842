"""What a retriever is: it indexes the passages of a document and ranks them for a question.
Passages are whole sentences packed up to a token budget, each with its place in the
document (a character range), so that an answer's sources can be shown and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import prompts
from ..split import sentence_spans


@dataclass(frozen=True)
class Passage:
    """A run of whole sentences of the document: `text[start:end]`, and its tokens."""

    start: int  # character offsets in the document
    end: int
    text: str
    tokens: tuple[int, ...]


def passages(tokenizer, text: str, max_tokens: int) -> list[Passage]:
    """`text` cut into passages of whole sentences, each of at most `max_tokens` tokens where
    its sentences allow (a longer sentence is a passage of its own), in document order."""
    out: list[Passage] = []
    start = end = None
    tokens: list[int] = []
    for a, b in sentence_spans(text):
        if start is not None:
            joined = prompts.encode(tokenizer, text[start:b])  # the text between counts too
            if len(joined) <= max_tokens:
                end, tokens = b, joined
                continue
            out.append(Passage(start, end, text[start:end], tuple(tokens)))
        start, end, tokens = a, b, prompts.encode(tokenizer, text[a:b])
    if start is not None:
        out.append(Passage(start, end, text[start:end], tuple(tokens)))
    return out


@dataclass
class PassageIndex:
    """A document's passages of about `passage_len` tokens and a retriever's index of them."""

    passages: list[Passage]
    retriever: Retriever
    index: object | None  # None: nothing to rank (no passage has a word the retriever indexes)
    passage_len: int

    def ranked(self, question: str) -> list[Passage]:
        """The passages that match `question`, best first (none: no term in common)."""
        if self.index is None:
            return []
        return [self.passages[i] for i in self.retriever.search(self.index, question)]


class Retriever:
    """Ranks a document's passages for a question (`--retriever`)."""

    name: str
    help: str  # one line for the option's help
    order: int = 100  # where it stands in lists
    version: str  # what the files `save` writes need to `load` them (a library's version)

    def index(self, passages: list[Passage]) -> object | None:
        """An index of `passages` that `search` reads; None where none of them holds a word
        to index."""
        raise NotImplementedError

    def search(self, index: object, question: str) -> list[int]:
        """The positions (in `passages`) of the passages that match `question`, best first;
        empty where none shares a term with it."""
        raise NotImplementedError

    def save(self, index: object, folder: Path) -> None:
        """Write `index` as files in the new folder `folder` (no pickle: the store reads them)."""
        raise NotImplementedError

    def load(self, folder: Path) -> object:
        """The index `save` wrote in `folder`."""
        raise NotImplementedError
