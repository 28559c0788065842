"""scripts/reading_curriculum.py: its examples, and a short run on the fast world model."""

from __future__ import annotations

import json
import random
import re
import sys

import pytest
from conftest import load_script

from lift_mlx.world import TEMPLATES, TRAIN_PHRASINGS
from lift_mlx.world_model import WorldModelSettings


@pytest.fixture(scope="module")
def curriculum():
    return load_script("reading_curriculum")


def _matches(question: str, phrasings: str) -> bool:
    for attrs in TEMPLATES.values():
        for _, questions in attrs.values():
            chosen = questions[:TRAIN_PHRASINGS] if phrasings == "train" \
                else questions[TRAIN_PHRASINGS:]
            for q in chosen:
                if re.fullmatch(re.escape(q).replace(re.escape("{e}"), ".+"), question):
                    return True
    return False


@pytest.mark.parametrize("sentences", [1, 4])
def test_examples_hold_the_answer_in_a_context_of_k_sentences(curriculum, world_model,
                                                              sentences):
    import mlx_lm

    _, tokenizer = mlx_lm.load(str(world_model[0]))
    rng = random.Random(0)
    for phrasings in ("train", "heldout"):
        examples = [curriculum.reading_example(tokenizer, rng, sentences, phrasings,
                                               WorldModelSettings()) for _ in range(20)]
        examples = [e for e in examples if e]
        assert len(examples) >= 15
        for prompt, answer in examples:
            text = tokenizer.decode(prompt)
            context = text.split("\n\n", 1)[1].split("\n\nAnswer the question")[0]
            question = text.split("Question: ")[1].split("<|im_end|>")[0]
            assert answer in context and _matches(question, phrasings)
            assert context.count(".") <= sentences  # one fact, one full stop, per sentence


def test_runs_stages_and_saves_a_trained_model(curriculum, world_model, tmp_path, monkeypatch):
    import mlx.core as mx
    import mlx_lm

    model_path = world_model[0]
    out, report = tmp_path / "reader", tmp_path / "curriculum.json"
    monkeypatch.setattr(sys, "argv", [
        "reading_curriculum.py", "--model", str(model_path), "--schedule", "3:1,2:2",
        "--batch-size", "4", "--questions", "3", "--json", str(report), "--out", str(out)])
    curriculum.main()
    rows = json.loads(report.read_text())["rows"]
    assert [(r["step"], r["max_sentences"]) for r in rows] == [(0, 0), (3, 1), (5, 2)]
    assert all(r[f"acc_{k}"] in (0.0, 1 / 3, 2 / 3, 1.0) for r in rows
               for k in curriculum.EVAL_SENTENCES)
    before, _ = mlx_lm.load(str(model_path))
    after, _ = mlx_lm.load(str(out))
    w0 = before.model.layers[0].self_attn.q_proj.weight
    w1 = after.model.layers[0].self_attn.q_proj.weight
    assert not mx.allclose(w0, w1).item()  # five steps of training changed the weights
