"""A base model with a document's adapter on it, answering questions about the document: the
object `absorb` returns and `load_absorbed` makes from a stored adapter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from . import adapters, store
from .adapters import base_view
from .answer import (
    MEMORY_TOKENS,
    about_document,
    backing,
    document_prompt,
    short_answer,
    stream_answer,
)
from .config import AnswerSettings
from .errors import LiftError
from .models import LoadedModel, config_fingerprint, load_model
from .prompts import encode, prompt_tokenizer
from .retrieval import Passage, PassageIndex, entry_index

STORED_PASSAGE_LEN = AnswerSettings().passage_len  # the index an entry keeps
PLAIN_READER = ("the plain base model reading the document in its prompt, no adapter "
                "(--use-adapter for the adapter; which is better per model: "
                "docs/answer-modes.md)")


def trained_prompting(tokenizer, meta: dict):
    """What builds the prompts of a stored adapter (`meta`: its lift_meta.json) as its
    training samples were built (`prompts.prompt_tokenizer`); an entry made before
    --system-prompt existed was trained with the template's own."""
    trained = meta.get("settings", {}).get("train", {})
    return prompt_tokenizer(tokenizer, trained.get("system_prompt", "model"))


def reset_adapter(lm: LoadedModel) -> None:
    """Take any adapter off the model, so it is the plain base again."""
    adapters.remove(lm.model)
    lm.model.unfreeze()
    lm.model.eval()


class Absorbed:
    """A base model with a document's adapter loaded: ask it questions."""

    def __init__(self, lm: LoadedModel, document_text: str, adapter_path: Path, meta: dict,
                 report=None):
        self.lm = lm
        # `report`: the AbsorbReport of the absorb that made it; None when loaded from the store
        self.document_text = document_text
        self.adapter_path = Path(adapter_path)
        self.meta = meta
        self.report = report
        self._doc_tokens: list[int] | None = None
        self._base = None
        self._indexes: dict[int, PassageIndex] = {}  # passage length -> the document's index
        self.prompting = trained_prompting(lm.tokenizer, meta)
        # the last check: (its question and settings, the answer from memory, the passage
        # backing it, and the plain base's prompt from the passages with the passages it holds)
        self._checked: tuple | None = None

    @property
    def doc_tokens(self) -> list[int]:
        if self._doc_tokens is None:
            self._doc_tokens = encode(self.lm.tokenizer, self.document_text)
        return self._doc_tokens

    def prompt(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> list[int]:
        """Prompt ids for `question` as `stream` answers it with the adapter."""
        return self._prompt(question, replace(settings or AnswerSettings(), **changes))[0]

    def sources(self, question: str, settings: AnswerSettings | None = None, *,
                route: bool = True, **changes) -> list[Passage]:
        """The retrieved passages the prompt for `question` holds, in document order (none
        without `settings.retrieve`, or where the view or the question alone answers); with
        `check`, the passage that backs the adapter's answer where one does."""
        model, settings = self._routed(question, replace(settings or AnswerSettings(), **changes),
                                       route)
        if self._checks(model, settings):
            _, source, _, held = self._check(question, settings)
            return [source] if source is not None else held
        return self._prompt(question, settings, model is self.lm.model)[1]

    def check(self, question: str, settings: AnswerSettings | None = None
              ) -> tuple[str, Passage | None]:
        """The adapter's answer to `question` alone (at most MEMORY_TOKENS tokens), and the
        passage of those retrieved for it that backs it (`answer.backing`; None: none does).
        The last one is kept, so that the answer shown, its source and `answered_by` agree
        even where sampling (`temp` > 0) would answer differently the next time."""
        return self._check(question, settings or AnswerSettings())[:2]

    def _check(self, question: str, settings: AnswerSettings) -> tuple:
        """`check`'s answer and passage, and the plain base's prompt from the passages and
        the passages it holds (what answers where no passage backs the adapter's answer)."""
        key = (question, settings.temp, settings.max_tokens, settings.retrieved_len,
               settings.passage_len)
        if self._checked is None or self._checked[0] != key:
            ids = self._prompt(question, replace(settings, context=False))[0]
            memory = "".join(stream_answer(self.lm.model, self.lm.tokenizer, ids,
                                           min(settings.max_tokens, MEMORY_TOKENS),
                                           settings.temp))
            reading, held = self._prompt(question, settings, adapter=False)
            self._checked = key, memory, backing(memory, question, held), reading, held
        return self._checked[1:]

    def _checks(self, model, settings: AnswerSettings) -> bool:
        """Whether the adapter's answer from memory is checked (`--check`) where `model`
        answers with `settings`."""
        return (model is self.lm.model and bool(settings.check) and settings.context
                and settings.retrieve)

    def _prompt(self, question: str, settings: AnswerSettings,
                adapter: bool = True) -> tuple[list[int], list]:
        index = None
        if settings.context and settings.retrieve and question.strip():
            index = self._indexes.get(settings.passage_len)
            if index is None:  # the entry's own, else built (and kept at the default length)
                index = self._indexes[settings.passage_len] = entry_index(
                    self.lm.tokenizer, self.document_text, self.adapter_path,
                    settings.passage_len, keep=settings.passage_len == STORED_PASSAGE_LEN)
        tokenizer = self.prompting if adapter else self.lm.tokenizer
        return document_prompt(tokenizer, question, self.doc_tokens, settings, self.lm.window,
                               index)

    def _routed(self, question: str, settings: AnswerSettings, route: bool):
        """The model that answers `question` and the settings it answers with: the plain
        base, with no document in the prompt, where the question is not about the document."""
        about = self.uses_adapter(question) if route else True
        if not about or settings.use_adapter is False:
            # the plain base knows nothing of the document: it reads it (the passages, or the
            # view) where the question is about it, and gets the question alone where not
            return self._base_model(), replace(settings, context=about)
        return self.lm.model, settings

    def _base_model(self):
        if self._base is None:
            self._base = base_view(self.lm.model)
        return self._base

    def answered_by(self, question: str, settings: AnswerSettings | None = None, *,
                    route: bool = True) -> str:
        """Which model answers `question`, and why, as a user reads it under the answer."""
        if route and not self.uses_adapter(question):
            return ("the plain base model (the question names nothing of the document, so "
                    "the document's adapter is left out)")
        settings = settings or AnswerSettings()
        if settings.use_adapter is False:
            return PLAIN_READER
        if self._checks(self.lm.model, settings):
            memory, source = self.check(question, settings)
            if source is not None:
                return "the document's adapter, from memory (the source below holds its answer)"
            return (f"the plain base model reading the passages below (the adapter's answer "
                    f"from memory, {short_answer(memory)[:40]!r}, is in none of them)")
        return "the document's adapter"

    def uses_adapter(self, question: str) -> bool:
        """Whether the adapter answers `question`: where it is about the document (see
        `answer.about_document`); the plain base answers the rest, so absorbing a document
        costs nothing on general questions."""
        return about_document(question, self.document_text)

    def stream(self, question: str, settings: AnswerSettings | None = None, *,
               route: bool = True, **changes) -> Iterator[str]:
        """Yield the answer as it is generated (`settings`, with `changes` to its fields such
        as `max_tokens=64`); with `route`, questions not about the document are answered by
        the plain base (no adapter, no document view)."""
        model, settings = self._routed(question, replace(settings or AnswerSettings(), **changes),
                                       route)
        if self._checks(model, settings):
            memory, source, reading, _ = self._check(question, settings)
            if source is not None:
                yield memory
                return
            model, ids = self._base_model(), reading  # the plain base reads the passages
        else:
            ids = self._prompt(question, settings, model is self.lm.model)[0]
        yield from stream_answer(model, self.lm.tokenizer, ids, settings.max_tokens,
                                 settings.temp)

    def ask(self, question: str, settings: AnswerSettings | None = None, **kwargs) -> str:
        """The whole answer to `question` (see `stream` for the options)."""
        return "".join(self.stream(question, settings, **kwargs))


def load_absorbed(adapter_dir: str | Path, model: str | LoadedModel | None = None) -> Absorbed:
    """Load a stored adapter on its base model (or on `model`, which must be the same base)."""
    adapter_dir = Path(adapter_dir)
    meta = store.verify(adapter_dir)  # a damaged entry is refused, never loaded
    lm = as_model(model or meta["model"]["name"])
    made_for = meta["model"]["fingerprint"]
    if made_for not in (lm.fingerprint, config_fingerprint(lm.path)):  # the latter: older entries
        raise LiftError(
            f"adapter {adapter_dir} was made for base model {meta['model']['name']!r}, "
            f"not {lm.name!r}; pass --model {meta['model']['name']} or absorb again"
        )
    reset_adapter(lm)
    adapters.load(lm.model, adapter_dir)
    lm.model.eval()
    text = (adapter_dir / store.DOCUMENT_FILE).read_text(encoding="utf-8")
    return Absorbed(lm, text, adapter_dir, meta)


def as_model(model: str | LoadedModel | None) -> LoadedModel:
    """`model` loaded, unless it is already."""
    return model if isinstance(model, LoadedModel) else load_model(model)
