"""scripts/world_experiment.py: its statistics by hand, and one run end to end on the fast
knowledge-world model."""

from __future__ import annotations

import json
import statistics
import sys

import pytest
from conftest import load_script

from lift_mlx import prompts
from lift_mlx.answer import question_prompt


@pytest.fixture(scope="module")
def experiment():
    return load_script("world_experiment")


def test_summary_is_the_mean_and_spread_of_per_seed_accuracies(experiment):
    hits = {(0, "inside"): [1, 0], (0, "outside"): [0, 0],
            (1, "inside"): [1, 1], (1, "outside"): [1, 0]}
    rows = [{"size": 8, "seed": seed, "arm": "lift", "region": region, "em": em}
            for (seed, region), ems in hits.items() for em in ems]
    lift = experiment.summarize(rows)[8]["lift"]
    assert lift["inside"]["per_seed"] == [0.5, 1.0] and lift["inside"]["n"] == 4
    assert lift["inside"]["mean"] == 0.75
    assert lift["inside"]["stdev"] == pytest.approx(statistics.stdev([0.5, 1.0]))
    assert lift["outside"]["per_seed"] == [0.0, 0.5]
    assert lift["all"]["per_seed"] == [0.25, 0.75] and lift["all"]["n"] == 8
    table = experiment.format_table(experiment.summarize(rows))
    assert "| 8x window | lift | 75.0 ± 35.4 (n=4) | 25.0 ± 35.4 (n=4) | 50.0 ± 35.4 (n=8) |" \
        in table


def test_runs_end_to_end_and_reports_each_arm_by_region(experiment, world_model, tmp_path,
                                                        monkeypatch):
    model, _ = world_model
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["world_experiment.py", "--model", str(model), "--sizes", "2", "--seeds", "0",
            "--questions", "2", "--epochs", "1", "--out", str(out), "--work", str(work)]
    monkeypatch.setattr(sys, "argv", argv)
    experiment.main()
    result = json.loads((out / "results.json").read_text())
    assert set(result["summary"]["2"]) == set(experiment.ARMS)
    for arm in experiment.ARMS:
        regions = result["summary"]["2"][arm]
        assert regions["inside"]["n"] == regions["outside"]["n"] == 2
        assert regions["all"]["n"] == 4
    assert len(result["rows"]) == 4 * len(experiment.ARMS)
    (run,) = result["runs"]
    assert {a["adapter"] for a in run["absorbs"]} == {"lift", "raw-ft"}

    # Each question's region is where its fact sits in the prompt the in-context arms build.
    import mlx_lm

    _, tokenizer = mlx_lm.load(str(model))
    world, doc = experiment.world_b_doc(0, 2, 512, experiment.chars_per_token(tokenizer),
                                        tmp_path)
    doc_tokens = prompts.encode(tokenizer, doc.document)
    records = [json.loads(line) for line in
               next(work.glob("eval-2x-*")).joinpath("records.jsonl").read_text().splitlines()]
    trunc = [r for r in records if r["arm"] == "icl-trunc"]
    assert len(trunc) == 4
    for r in trunc:
        ids = question_prompt(tokenizer, r["question"], doc_tokens, 512, experiment.MAX_TOKENS)
        shown = world.fact_offsets(tokenizer.decode(ids))
        inside = (r["meta"]["entity"], r["meta"]["attribute"]) in shown
        assert r["meta"]["region"] == ("inside" if inside else "outside")

    # The report alone, from the runs on disk, is the same.
    monkeypatch.setattr(sys, "argv", [*argv, "--report-only"])
    experiment.main()
    assert json.loads((out / "results.json").read_text())["summary"] == result["summary"]
