"""Retrieval: passages of whole sentences with their place in the document, BM25 ranking, the
prompt that holds the best of them, and `ask --retrieve` showing them after the answer."""

import pytest
from click.testing import CliRunner

from lift_mlx import prompts
from lift_mlx.absorb import absorb
from lift_mlx.answer import passages_prompt, question_prompt
from lift_mlx.cli import cli
from lift_mlx.errors import LiftError
from lift_mlx.retrieval import RETRIEVERS, passage_index, passages, retriever_named
from lift_mlx.split import sentence_spans

TEXT = ("The harbour has two piers. The north pier was built in 1822 by Ada Korrin. "
        "Fishing boats land cod and herring there every morning. "
        "The lighthouse on Kestrel Point has 142 steps. A ticket to climb it costs four pounds. "
        "The museum keeps the old lamp and a logbook of storms. ")


# a quick absorb of the harbour text, and answers from 12-token passages, 64 tokens of them
QUICK = dict(tasks=("recite",), seg_len=64, stride=32, context_len=16, rank=2,
             grad_checkpoint=False)
RETRIEVE = dict(retrieve=True, passage_len=12, retrieved_len=64)


def _harbour(tmp_path):
    doc = tmp_path / "harbour.md"
    doc.write_text(TEXT * 3)
    return doc


def test_passages_are_whole_sentences_in_order_within_their_budget(tiny_lm, demo_text):
    found = passages(tiny_lm.tokenizer, demo_text, 48)
    spans = sentence_spans(demo_text)
    starts, ends = {a for a, _ in spans}, {b for _, b in spans}
    assert len(found) > 10
    for p in found:
        assert p.start in starts and p.end in ends  # cut between sentences only
        assert p.text == demo_text[p.start:p.end]
        assert list(p.tokens) == prompts.encode(tiny_lm.tokenizer, p.text)
        one_sentence = sum(1 for a, _ in spans if p.start <= a < p.end) == 1
        assert len(p.tokens) <= 48 or one_sentence  # only a long sentence stands alone
    assert [p.start for p in found] == sorted(p.start for p in found)
    assert {a for a, _ in spans} == {a for a, _ in spans
                                     if any(p.start <= a < p.end for p in found)}


def test_bm25_ranks_the_passage_with_the_answer_first(tiny_lm):
    index = passage_index(tiny_lm.tokenizer, TEXT, 12)
    assert index.retriever is RETRIEVERS["bm25"] and len(index.passages) >= 4
    best = index.ranked("How many steps does the lighthouse have?")[0]
    assert "142 steps" in best.text
    assert "Ada Korrin" in index.ranked("Who built the north pier?")[0].text
    assert index.ranked("xylophone quartz") == []  # no term in common: nothing
    with pytest.raises(LiftError, match="unknown retriever 'dense'; choose one of bm25"):
        retriever_named("dense")


def test_a_document_of_stop_words_alone_has_nothing_to_rank(tiny_lm):
    """bm25s failed (ValueError) on passages without a word it indexes."""
    index = passage_index(tiny_lm.tokenizer, "It is. It is.", 12)
    assert len(index.passages) == 1 and index.index is None
    assert index.ranked("What is it?") == index.ranked("Is it?") == []


def test_the_prompt_holds_the_best_passages_in_document_order(tiny_lm):
    tok = tiny_lm.tokenizer
    index = passage_index(tok, TEXT, 12)
    ranked = index.ranked("Who built the north pier in 1822?")
    ids, held = passages_prompt(tok, "Who built the north pier in 1822?", ranked, 40, 1024, 16)
    assert held and ranked[0] in held
    assert [p.start for p in held] == sorted(p.start for p in held)
    context = []
    for p in held:
        context += (prompts.encode(tok, prompts.ELLIPSIS) if context else []) + list(p.tokens)
    assert len(context) <= 40
    assert ids == prompts.chat_ids(tok, prompts.question_body(
        tok, "Who built the north pier in 1822?", context))
    bare, none = passages_prompt(tok, "Who?", [], 40, 1024, 16)
    assert none == [] and bare == question_prompt(tok, "Who?", None, 1024, 16)
    with pytest.raises(LiftError, match="the question is empty"):
        passages_prompt(tok, "  ", ranked, 40, 1024, 16)


def test_ask_with_retrieve_answers_from_passages_and_shows_them(tiny_lm, tiny_model_path,
                                                                 tmp_path):
    absorbed = absorb(_harbour(tmp_path), tiny_lm, epochs=1, **QUICK)
    question = "How many steps does the lighthouse on Kestrel Point have?"
    held = absorbed.sources(question, **RETRIEVE)
    assert held and all(absorbed.document_text[p.start:p.end] == p.text for p in held)
    assert any("142 steps" in p.text for p in held)
    # a short prefill, not the whole document
    assert len(absorbed.prompt(question, **RETRIEVE)) < len(absorbed.prompt(question,
                                                                           retrieve=False))
    # no term in common with the document: the head+tail view, as with --no-retrieve
    assert absorbed.sources("Xylophone quartz?", retrieve=True) == []
    assert absorbed.prompt("Xylophone quartz?", retrieve=True) == absorbed.prompt(
        "Xylophone quartz?", retrieve=False)
    assert absorbed.sources(question, retrieve=False) == []  # the view, no sources
    assert absorbed.sources(question) != []  # retrieving is the default

    r = CliRunner().invoke(cli, ["ask", str(absorbed.adapter_path), question,
                                 "--passage-len", "12", "--retrieved-len", "64",
                                 "--max-tokens", "4", "--model", str(tiny_model_path)])
    assert r.exit_code == 0, r.output
    assert "sources (the passages the prompt held):" in r.stderr
    shown = [line for line in r.stderr.splitlines() if line.startswith("  [chars ")]
    assert len(shown) == len(held) and any("142 steps" in line for line in shown)
    first = held[0]
    assert f"[chars {first.start:,}-{first.end:,}]" in shown[0]


def test_answers_while_the_adapter_trains_come_from_the_passages(tiny_lm, tmp_path):
    """`--now --retrieve`: until the adapter is ready, the plain base answers with the
    passages that match the question, and says which they were."""
    from lift_mlx.absorb import Absorbing

    now = Absorbing(_harbour(tmp_path), tiny_lm, epochs=100, **QUICK)
    question = "Who built the north pier?"
    held, ids = now.sources(question, **RETRIEVE), now.prompt(question, **RETRIEVE)
    assert not now.ready  # still training: these came from the base's side
    assert held and any("Ada Korrin" in p.text for p in held)
    index = passage_index(tiny_lm.tokenizer, now.document.text, 12)
    assert ids == passages_prompt(tiny_lm.tokenizer, question, index.ranked(question), 64,
                                  tiny_lm.window, 256)[0]
    assert now.sources(question, retrieve=False) == []  # the view: no sources
    # another passage length: passages of that length, not those of the first index
    longer = now.sources(question, **{**RETRIEVE, "passage_len": 40})
    assert not now.ready and longer != held
    assert longer == passages_prompt(
        tiny_lm.tokenizer, question, passage_index(tiny_lm.tokenizer, now.document.text,
                                                   40).ranked(question), 64, tiny_lm.window,
        256)[1]
    now.wait()
