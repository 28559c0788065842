import pytest

from lift_mlx import prompts
from lift_mlx.answer import question_prompt
from lift_mlx.errors import LiftError
from lift_mlx.samples import qa_sample


def test_context_prompt_is_head_and_tail_within_the_window(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = prompts.encode(tok, demo_text * 2)  # longer than the 1024-token window
    p = question_prompt(tok, "Who owns the lighthouse?", ids, window=1024, max_tokens=200)
    assert len(p) == 1024 - 200  # the whole budget is used, nothing more
    text = tok.decode(p)
    assert demo_text[:200] in text  # head
    assert demo_text.rstrip()[-200:] in text  # tail
    assert prompts.ELLIPSIS in text
    assert text.endswith("Question: Who owns the lighthouse?<|im_end|>\n<|im_start|>assistant\n")


def test_short_document_goes_in_whole(tiny_lm):
    tok = tiny_lm.tokenizer
    ids = prompts.encode(tok, "The slipway is below the lighthouse.")
    p = question_prompt(tok, "Where is the slipway?", ids, window=1024, max_tokens=200)
    assert prompts.ELLIPSIS not in tok.decode(p)
    assert "The slipway is below the lighthouse." in tok.decode(p)


def test_no_context_prompt_is_the_qa_training_prompt(tiny_lm):
    tok = tiny_lm.tokenizer
    p = question_prompt(tok, "Who owns the lighthouse?", None, window=1024, max_tokens=64)
    s = qa_sample(tok, "Who owns the lighthouse?", "the town")
    assert list(s.tokens[: len(p)]) == p and s.mask[: len(p)] == (0,) * len(p)


def test_window_too_small_for_context_falls_back_to_the_question(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = prompts.encode(tok, demo_text)
    p = question_prompt(tok, "Who?", ids, window=40, max_tokens=30)
    assert p == question_prompt(tok, "Who?", None, window=40, max_tokens=30)


def test_empty_question(tiny_lm):
    with pytest.raises(LiftError, match="question is empty"):
        question_prompt(tiny_lm.tokenizer, "   ", None, 1024, 10)
