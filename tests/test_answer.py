import pytest

from lift_mlx import prompts
from lift_mlx.answer import (
    QUESTION_STEP,
    PromptCache,
    about_document,
    backing,
    question_prompt,
    short_answer,
    stream_answer,
)
from lift_mlx.errors import LiftError
from lift_mlx.retrieval import Passage
from lift_mlx.samples import qa_sample


def test_context_prompt_is_head_and_tail_within_the_window(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = prompts.encode(tok, demo_text * 2)  # longer than the 1024-token window
    p = question_prompt(tok, "Who owns the lighthouse?", ids, window=1024, max_tokens=200)
    # The budget is used up to the question's share, rounded up to QUESTION_STEP tokens.
    assert 1024 - 200 - QUESTION_STEP < len(p) <= 1024 - 200
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


def test_questions_of_similar_length_share_the_document_view(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = prompts.encode(tok, demo_text * 2)
    a = question_prompt(tok, "Who owns the lighthouse?", ids, window=1024, max_tokens=200)
    b = question_prompt(tok, "Who keeps the lighthouse?", ids, window=1024, max_tokens=200)
    c = question_prompt(tok, "Who keeps the lighthouse? " * 12, ids, window=1024, max_tokens=200)
    view = tok.decode(a).split("Question:")[0]
    assert tok.decode(b).split("Question:")[0] == view
    assert prompts.ELLIPSIS in view
    assert tok.decode(c).split("Question:")[0] != view  # a much longer question: a shorter view


def test_prompt_cache_answers_as_a_fresh_prefill_does(tiny_lm, demo_text):
    tok = tiny_lm.tokenizer
    ids = prompts.encode(tok, demo_text * 2)
    questions = ["Who owns the lighthouse?", "Where is the slipway?", "Who owns the lighthouse?"]
    prompts_ = [question_prompt(tok, q, ids, window=512, max_tokens=16) for q in questions]
    fresh = ["".join(stream_answer(tiny_lm.model, tok, p, 16)) for p in prompts_]
    cache = PromptCache(tiny_lm.model)
    prefilled = []
    prepare = cache.prepare

    def counting_prepare(prompt_ids):
        kv, rest = prepare(prompt_ids)
        prefilled.append(len(rest))
        return kv, rest

    cache.prepare = counting_prepare
    cached = ["".join(stream_answer(tiny_lm.model, tok, p, 16, cache=cache)) for p in prompts_]
    assert cached == fresh
    # The first prompt is prefilled whole; the others only from their question on.
    assert prefilled[0] == len(prompts_[0])
    assert all(n < 30 for n in prefilled[1:]), prefilled


@pytest.mark.parametrize("question, about", [
    ("Who owns the lighthouse?", True),  # its content words are the document's
    ("When did the Marigold leave Portwen?", True),  # names of the document
    ("What is the capital of France?", False),
    ("Who wrote Romeo and Juliet?", False),
    ("What is 2 plus 2?", False),  # small numbers are everywhere: not a name
    ("How many crowns did the cooperative pay in 1921?", True),
])
def test_about_document(question, about):
    document = ("The Marigold left Portwen in March. The lighthouse is owned by the town and "
                "leased to the cooperative. In 1921 the cooperative paid 2 crowns.")
    assert about_document(question, document) is about


def test_the_view_holds_at_most_view_len_tokens_whatever_the_window(tiny_lm, demo_text):
    """A document that fits the model's window still gets a bounded view: an answer costs a
    short prefill (--view-len), not the whole document's."""
    from lift_mlx.answer import document_prompt
    from lift_mlx.config import AnswerSettings

    tok = tiny_lm.tokenizer
    doc_tokens = prompts.encode(tok, demo_text)[:700]  # fits the tiny model's 1k window
    question = "Who was the first chair?"
    bare = len(question_prompt(tok, question, None, tiny_lm.window, 16))
    whole, _ = document_prompt(tok, question, doc_tokens,
                               AnswerSettings(max_tokens=16, view_len=4096), tiny_lm.window)
    bounded, _ = document_prompt(tok, question, doc_tokens,
                                 AnswerSettings(max_tokens=16, view_len=200), tiny_lm.window)
    header = len(whole) - bare - len(doc_tokens)  # the view's headers
    assert header >= 0
    assert bare + 150 < len(bounded) <= bare + header + 200
    # the same view as a window that leaves 200 tokens gives (head and tail of the document)
    assert bounded == question_prompt(tok, question, doc_tokens, 200 + 16 + 64, 16)


HELD = [Passage(0, 60, "The slipway is below the lighthouse. Orla Vell keeps the light.", ()),
        Passage(200, 260, "In 8.32, ls got faster on NFS. Storms come in November.", ()),
        Passage(300, 420, "Orla Vell keeps the light, and the bell, the boat, the shed, the "
                "path, the garden and the store were all new in 1990.", ())]


@pytest.mark.parametrize("answer, question, found", [
    ("Orla Vell", "Who keeps the light?", 0),  # in a sentence with "keeps" and "light"
    ("Orla Vell.", "Who keeps the light?", 0),  # end punctuation dropped
    ("orla vell", "Who keeps the light?", None),  # as the passage writes it, or not at all
    ("light", "What does Orla Vell keep?", 0),
    ("Light", "What does Orla Vell keep?", None),  # a capitalised "light" is another answer
    ('"Orla Vell"\nShe has kept it since 1990.', "Who keeps the light?", 0),  # first line only
    ("8.32", "Which version made ls faster on NFS?", 1),  # two of its words: faster, nfs
    ("8.32", "Which version made ls faster?", None),  # one of its three words only
    ("November", "When do storms come?", 1),
    ("November", "When do the storms of Ambry come?", 1),  # two of its three words
    ("Orla Vell", "When do storms come?", None),  # held, but in a sentence about other things
    ("Tam Vell", "Who keeps the light?", None),  # not held at all
    ("Vel", "Who keeps the light?", None),  # whole words only
    ("8", "Which version made ls faster on NFS?", None),  # one character is found everywhere
    ("", "Who keeps the light?", None),
    ("lighthouse", "Where is the lighthouse?", None),  # the question's own word backs nothing
    # the question's words are in the sentence, but not within 8 words of the answer
    ("1990", "When did Orla Vell first keep the light?", None),
    ("1990", "When were the garden and the store new?", 2),
])
def test_an_answer_is_backed_by_a_sentence_that_holds_it_and_is_about_the_question(
        answer, question, found):
    got = backing(answer, question, HELD)
    assert got is (None if found is None else HELD[found])


def test_short_answer_is_the_first_line_without_quotes_or_end_punctuation():
    assert short_answer("  'Bouwaindford.'\nmore") == "Bouwaindford"
    assert short_answer("\n\n") == ""
