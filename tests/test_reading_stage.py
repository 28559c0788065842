"""The world model's reading stage: its examples and batches, a short run, and the script."""

from __future__ import annotations

import json
import random
import sys

import pytest
from conftest import HELDOUT_QUESTIONS, TRAIN_QUESTIONS, load_script

from lift_mlx.world_model import (
    ReadingBatches,
    ReadingSettings,
    fresh_world,
    reading_example,
    tiny_settings,
    train_reading,
    world_a,
)

SETTINGS = tiny_settings()


def _phrasing(question: str) -> str | None:
    """"train" or "heldout": which set of question phrasings `question` comes from."""
    for name, patterns in (("train", TRAIN_QUESTIONS), ("heldout", HELDOUT_QUESTIONS)):
        if any(p.fullmatch(question) for p in patterns):
            return name
    return None


def _context_and_question(tokenizer, prompt: list[int]) -> tuple[str, str]:
    text = tokenizer.decode(prompt)
    context = text.split("\n\n", 1)[1].split("\n\nAnswer the question")[0]
    return context, text.split("Question: ")[1].split("<|im_end|>")[0]


@pytest.fixture(scope="module")
def tokenizer(world_model):
    import mlx_lm

    return mlx_lm.load(str(world_model[0]))[1]


@pytest.mark.parametrize("sentences", [1, 4])
@pytest.mark.parametrize("phrasings", ["train", "heldout"])
def test_example_asks_about_a_fact_in_a_context_of_k_sentences(tokenizer, sentences,
                                                                phrasings):
    rng = random.Random(0)
    for _ in range(20):
        world = fresh_world(rng, SETTINGS)
        prompt, answer = reading_example(tokenizer, world, rng, sentences, phrasings, SETTINGS)
        context, question = _context_and_question(tokenizer, prompt)
        # Every statement ends at its only full stop: k sentences, all of them the world's.
        assert context.count(".") == sentences
        assert len(world.fact_offsets(context)) == sentences
        assert answer in context and _phrasing(question) == phrasings
        entity = next(q.entity for q in world.questions("all") if q.question == question)
        assert entity in context


def test_batches_grow_with_the_stage_and_rehearse_in_turn(tokenizer):
    reading = ReadingSettings(batch_size=6, rehearse_every=3, generator_rows=2)
    batches = ReadingBatches(tokenizer, SETTINGS, reading, random.Random(0))
    kinds = []
    for step in range(1, 13):
        batch = batches.next(step, max_sentences=2)
        kinds.append({s.kind for s in batch})
        if batch[0].kind == "read":
            assert len(batch) == 6
            for s in batch:
                n = len(s) - s.n_targets
                context, _ = _context_and_question(tokenizer, list(s.tokens[:n]))
                assert 1 <= context.count(".") <= 2
    assert kinds == [{"read"}, {"read"}, {"closed"}, {"read"}, {"read"}, {"gen"}] * 2
    assert all(len(batches.rehearsal(closed_book=False)) <= 2 for _ in range(5))
    # Rehearsal keeps world A: closed-book questions are about its entities.
    names = {f.entity for f in world_a(SETTINGS).facts}
    closed = batches.rehearsal(closed_book=True)
    assert all(any(n in tokenizer.decode(list(s.tokens)) for n in names) for s in closed)


def test_reading_only_batches_never_rehearse(tokenizer):
    batches = ReadingBatches(tokenizer, SETTINGS, ReadingSettings(batch_size=2,
                                                                  rehearse_every=0),
                             random.Random(0))
    assert all(batches.next(step, 1)[0].kind == "read" for step in range(1, 9))


def test_train_reading_checks_each_stage_and_saves(world_model, tmp_path):
    import mlx.core as mx
    import mlx_lm

    reading = ReadingSettings(schedule=((3, 1), (2, 2)), batch_size=4, rehearse_every=2,
                              check_sentences=(1, 4), check_questions=3)
    seen = []
    rows = train_reading(world_model[0], tmp_path / "reader", SETTINGS, reading,
                         on_stage=lambda r: seen.append(len(r)))
    assert [(r["step"], r["max_sentences"]) for r in rows] == [(0, 0), (3, 1), (5, 2)]
    assert seen == [2, 3]
    for r in rows:
        assert {r["reading_1"], r["reading_4"]} <= {0.0, 1 / 3, 2 / 3, 1.0}
        assert 0.0 <= r["closed_book_train"] <= 1.0
    assert rows[1]["loss"] > 0 and rows[2]["loss"] > 0
    before, _ = mlx_lm.load(str(world_model[0]))
    after, _ = mlx_lm.load(str(tmp_path / "reader"))
    w0 = before.model.layers[0].self_attn.q_proj.weight
    w1 = after.model.layers[0].self_attn.q_proj.weight
    assert not mx.allclose(w0, w1).item()  # five steps of training changed the weights


def test_script_runs_the_reading_stage_from_a_model(world_model, tmp_path, monkeypatch):
    script = load_script("train_world_model")
    with pytest.raises(Exception, match="STEPS:MAX_SENTENCES"):
        script.schedule("300")
    assert script.schedule("30:1,20:4") == ((30, 1), (20, 4))
    out = tmp_path / "reader"
    monkeypatch.setattr(sys, "argv", [
        "train_world_model.py", str(out), "--tiny", "--reading-from", str(world_model[0]),
        "--schedule", "2:1,2:3", "--questions", "4"])
    script.main()
    result = json.loads((out / "world_model.json").read_text())
    [run] = result["reading_runs"]
    assert run["from"] == str(world_model[0])
    assert run["settings"]["schedule"] == [[2, 1], [2, 3]]
    assert [r["step"] for r in run["rows"]] == [0, 2, 4]
    assert 0.0 <= result["checks"]["in_context_heldout_fresh"] <= 1.0
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    # A second run continues the model in place and adds to its record.
    monkeypatch.setattr(sys, "argv", [
        "train_world_model.py", str(out), "--tiny", "--reading-from", str(out),
        "--schedule", "2:2", "--rehearse-every", "1", "--generator-rows", "2",
        "--questions", "4"])
    script.main()
    runs = json.loads((out / "world_model.json").read_text())["reading_runs"]
    assert [r["from"] for r in runs] == [str(world_model[0]), str(out)]
    assert runs[1]["settings"]["generator_rows"] == 2
    assert runs[0]["rows"] == run["rows"]
