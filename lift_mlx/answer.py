"""Answering: a short prompt (the question, optionally with the passages of the document that
match it or a head+tail view of it) streamed through mlx-lm's generation loop."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from . import prompts
from .errors import LiftError
from .split import head_tail_context, sentence_spans
from .text import WORD, answer_spans, content_words, has_words, whole_words, words

if TYPE_CHECKING:  # retrieval brings bm25s (~0.3 s), which `lift-mlx --help` need not load
    from .config import AnswerSettings
    from .retrieval import Passage, PassageIndex

# A document too long for the prompt is cut to a head+tail view whose size leaves room for the
# question in steps of this many tokens, so questions of similar length get the same view:
# their prompts then share everything up to the question, and a `PromptCache` prefills the
# view once for all of them.
QUESTION_STEP = 64
# Most tokens of the adapter's answer from memory that `--check` looks for in the passages:
# what it can find there is a short span.
MEMORY_TOKENS = 64


def _overhead(tokenizer, question: str) -> int:
    return len(prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question, [])))


def context_budget(tokenizer, question: str, window: int, max_tokens: int) -> int:
    """Tokens of the document a prompt for `question` can hold whole: the window less the
    answer's `max_tokens` and the template, headers and question."""
    return window - max_tokens - _overhead(tokenizer, question)


def question_prompt(
    tokenizer,
    question: str,
    doc_tokens: list[int] | None,
    window: int,
    max_tokens: int,
    view_len: int | None = None,
) -> list[int]:
    """Prompt ids for `question`; with `doc_tokens`, the whole document where it fits in the
    `window` beside `max_tokens` of answer, else a head+tail view (see QUESTION_STEP); with
    `view_len`, the window is cut to what leaves the view that many tokens."""
    if not question.strip():
        raise LiftError("the question is empty; ask something about the document")
    bare = prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question))
    if doc_tokens is None:
        return bare
    overhead = _overhead(tokenizer, question)
    step = -(-overhead // QUESTION_STEP) * QUESTION_STEP
    if view_len is not None:
        window = min(window, view_len + max_tokens + step)
    if len(doc_tokens) <= window - max_tokens - overhead:  # context_budget's
        context = list(doc_tokens)
    else:
        context = head_tail_context(tokenizer, doc_tokens, window - max_tokens - step)
    if not context:
        return bare
    return prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question, context))


def passages_prompt(tokenizer, question: str, ranked: list[Passage], budget: int, window: int,
                    max_tokens: int) -> tuple[list[int], list[Passage]]:
    """Prompt ids for `question` with the best of the `ranked` passages that fit `budget`
    tokens (and the window beside `max_tokens` of answer), in document order and joined as
    the head+tail view is joined; and the passages it holds (none: the question alone)."""
    if not question.strip():
        raise LiftError("the question is empty; ask something about the document")
    room = min(budget, context_budget(tokenizer, question, window, max_tokens))
    separator = prompts.encode(tokenizer, prompts.ELLIPSIS)
    chosen: list[Passage] = []
    used = 0
    for passage in ranked:
        cost = len(passage.tokens) + (len(separator) if chosen else 0)
        if used + cost <= room:
            chosen.append(passage)
            used += cost
    chosen.sort(key=lambda p: p.start)
    context: list[int] = []
    for passage in chosen:
        context += (separator if context else []) + list(passage.tokens)
    body = prompts.question_body(tokenizer, question, context or None)
    return prompts.chat_ids(tokenizer, body), chosen


def document_prompt(tokenizer, question: str, doc_tokens: list[int], settings: AnswerSettings,
                    window: int, index: PassageIndex | None = None
                    ) -> tuple[list[int], list[Passage]]:
    """Prompt ids for a question about a document as `settings` say (the question alone, the
    head+tail view of at most `view_len` tokens, or with `retrieve` the passages `index` ranks
    for it, the view where none shares a term with it), and the retrieved passages it holds."""
    if settings.context and settings.retrieve and index is not None:
        if ranked := index.ranked(question):
            return passages_prompt(tokenizer, question, ranked, settings.retrieved_len, window,
                                   settings.max_tokens)
    tokens = doc_tokens if settings.context else None
    return question_prompt(tokenizer, question, tokens, window, settings.max_tokens,
                           settings.view_len), []


class PromptCache:
    """The KV cache of the last prompt answered, reused for the part the next prompt shares
    with it (a document view before several questions is prefilled once).

    Valid for one set of weights: make a new one when the adapter changes.
    """

    def __init__(self, model):
        self.model = model
        self.ids: list[int] = []
        self.cache = None

    def prepare(self, prompt_ids: list[int]) -> tuple[list, list[int]]:
        """The cache to generate with and the prompt tokens it does not hold yet."""
        # mlx_lm imports transformers (~1 s), and answering is on the path of
        # `lift-mlx --help` (the task kinds use its prompts): deferred so that it stays fast
        from mlx_lm.models import cache as kv
        from mlx_lm.utils import common_prefix_len

        shared = min(common_prefix_len(self.ids, prompt_ids), len(prompt_ids) - 1)
        if self.cache is None or not kv.can_trim_prompt_cache(self.cache) or shared < 1:
            self.cache, shared = kv.make_prompt_cache(self.model), 0
        else:  # drop the old prompt's own tail and the answer generated after it
            kv.trim_prompt_cache(self.cache, self.cache[0].offset - shared)
        self.ids = list(prompt_ids)
        return self.cache, prompt_ids[shared:]


def stream_answer(
    model, tokenizer, prompt_ids: list[int], max_tokens: int, temp: float = 0.0,
    cache: PromptCache | None = None,
) -> Iterator[str]:
    """Yield the answer's text as it is generated (greedy when temp is 0); with `cache`,
    the prompt's start is taken from it where it matches the previous prompt."""
    from mlx_lm import stream_generate  # deferred: see PromptCache.prepare
    from mlx_lm.sample_utils import make_sampler

    extra = {}
    if cache is not None:
        extra["prompt_cache"], prompt_ids = cache.prepare(prompt_ids)
    for response in stream_generate(
        model, tokenizer, prompt_ids, max_tokens=max_tokens, sampler=make_sampler(temp=temp),
        **extra,
    ):
        if response.text:
            yield response.text


def short_answer(answer: str) -> str:
    """`answer` as a span to look for in the document: its first line, without the
    whitespace, quotes and end punctuation around it."""
    lines = answer.strip().splitlines()
    return lines[0].strip().strip("\"'`").rstrip(".!?;:,").strip() if lines else ""


NEAR = 8  # words either side of an answer from memory where the question's words must be


def backing(answer: str, question: str, held: Sequence[Passage]) -> Passage | None:
    """The first passage of `held` with a sentence that holds `answer` (`short_answer`, as
    whole words, in the case it is written in) and, within NEAR words of it, two of the
    content words of `question` other than the answer's own (its one, where it has one): the
    check an adapter's answer from memory passes before `--check` shows it, with that passage
    as its source. None where no passage backs it (an answer of one character never does: it
    is found everywhere).

    Two words near the answer, rather than one anywhere in the sentence, were chosen on the
    development documents (a ~4k knowledge-world document and coreutils' NEWS): the same
    answers on the first; on NEWS 2 answers shown from memory instead of 5 (1 right either
    way), and one more question right. The case: an answer the adapter knows is the
    document's own words, written as the document writes them; where it does not know, it
    answers a capitalised word of the right kind ("Level", "Number" on tar's page, whose
    sentences have "level" and "number") (docs/answer-modes.md)."""
    span = short_answer(answer)
    if len(span) < 2 or not any(c.isalnum() for c in span):
        return None
    asked = set(content_words(question)) - set(content_words(span))
    if not asked:
        return None
    need = min(2, len(asked))
    pattern = re.compile(whole_words(span))
    for passage in held:
        for a, b in sentence_spans(passage.text):
            sentence = passage.text[a:b]
            for found in pattern.finditer(sentence):
                if len(asked & set(content_words(_around(sentence, found, NEAR)))) >= need:
                    return passage
    return None


def _around(sentence: str, found: re.Match, near: int) -> str:
    """The text of `sentence` from `near` words before `found` to `near` words after it."""
    spans = [(m.start(), m.end()) for m in WORD.finditer(sentence)]
    before = [s for s, e in spans if e <= found.start()]
    after = [e for s, e in spans if s >= found.end()]
    start = before[-near] if len(before) >= near else 0
    end = after[near - 1] if len(after) >= near else len(sentence)
    return sentence[start:end]


def about_document(question: str, document: str) -> bool:
    """Whether `question` is about `document` rather than about the world at large: it names
    something of the document (a capitalised name or a number of 3 digits or more found
    there), or at least half of its content words occur there. A document's adapter answers
    the former; the plain base the latter ("What is the capital of France?" asked of a
    fishing charter)."""

    spans = [s for s in answer_spans(question) if not s.isdigit() or len(s) > 2]  # not "2 + 2"
    if any(has_words(document, span) for span in spans):
        return True
    content = content_words(question)
    if not content:
        return False
    present = set(words(document))
    return sum(w in present for w in content) / len(content) >= 0.5
