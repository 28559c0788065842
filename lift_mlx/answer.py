"""Answering: a short prompt (the question, optionally with a head+tail view of the document)
streamed through mlx-lm's generation loop."""

from __future__ import annotations

from collections.abc import Iterator

from . import prompts
from .errors import LiftError
from .split import head_tail


def head_tail_context(tokenizer, doc_tokens: list[int], budget: int) -> list[int]:
    """The document's tokens, or its head and tail joined by an ellipsis, within `budget`."""
    separator = prompts.encode(tokenizer, prompts.ELLIPSIS)
    if budget < len(separator) + 2:
        return []
    return head_tail(doc_tokens, budget, separator)


def question_prompt(
    tokenizer,
    question: str,
    doc_tokens: list[int] | None,
    window: int,
    max_tokens: int,
) -> list[int]:
    """Prompt ids for `question`; with `doc_tokens`, the largest head+tail view that leaves
    `max_tokens` of the model's `window` for the answer."""
    if not question.strip():
        raise LiftError("the question is empty; ask something about the document")
    bare = prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question))
    if doc_tokens is None:
        return bare
    overhead = len(prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question, [])))
    budget = window - max_tokens - overhead
    context = head_tail_context(tokenizer, doc_tokens, budget)
    if not context:
        return bare
    return prompts.chat_ids(tokenizer, prompts.question_body(tokenizer, question, context))


def stream_answer(
    model, tokenizer, prompt_ids: list[int], max_tokens: int = 256, temp: float = 0.0
) -> Iterator[str]:
    """Yield the answer's text as it is generated (greedy when temp is 0)."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    for response in stream_generate(
        model, tokenizer, prompt_ids, max_tokens=max_tokens, sampler=make_sampler(temp=temp)
    ):
        if response.text:
            yield response.text
