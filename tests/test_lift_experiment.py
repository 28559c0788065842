"""scripts/lift_experiment.py: its statistics and targets by hand, and one run end to end on the
tiny model (its answers are noise: the test checks the mechanics, not accuracy)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def experiment():
    return load_script("lift_experiment")


def rows_for(arm, hits: dict, length=4096):
    return [{"length": length, "doc": doc, "arm": arm, "region": region, "contains": c,
             "f1": c / 2, "em": 0.0}
            for (doc, region), cs in hits.items() for c in cs]


def test_summary_is_the_mean_and_spread_of_per_document_scores(experiment):
    rows = rows_for("lift", {("a", "inside"): [1, 0], ("a", "outside"): [0, 0],
                             ("b", "inside"): [1, 1], ("b", "outside"): [1, 0]})
    lift = experiment.summarize(rows)[4096]["lift"]
    assert lift["inside"]["contains"]["per_doc"] == [0.5, 1.0] and lift["inside"]["n"] == 4
    assert lift["inside"]["contains"]["mean"] == 0.75
    assert lift["inside"]["contains"]["stdev"] == pytest.approx(statistics.stdev([0.5, 1.0]))
    assert lift["outside"]["contains"]["per_doc"] == [0.0, 0.5]
    assert lift["all"]["contains"]["per_doc"] == [0.25, 0.75] and lift["all"]["n"] == 8
    assert lift["all"]["f1"]["mean"] == 0.25
    table = experiment.format_table(experiment.summarize(rows), {})
    assert "| ~4k tokens | lift | 75 ± 35 | 25 ± 35 | 50 ± 35 | 25 ± 18 | 0 ± 0 | - |" in table


def test_targets_are_met_or_missed_by_their_margins(experiment):
    rows = (rows_for("lift", {("a", "inside"): [1], ("a", "outside"): [1, 1, 0, 0]})
            + rows_for("icl-trunc", {("a", "inside"): [1], ("a", "outside"): [1, 0, 0, 0]})
            + rows_for("raw-ft", {("a", "inside"): [0], ("a", "outside"): [1, 0, 0, 0]}))
    general = {4096: {"lift": {"kept": 9, "of": 10, "share": 0.9}}}
    checks = {c["target"]: c for c in experiment.targets(experiment.summarize(rows), general,
                                                       "tiny")}
    outside = checks["lift (outside) >= icl-trunc (outside) + 10"]
    assert outside["met"] and outside["value"] == pytest.approx(15.0)  # 50 vs 25, +10 margin
    raw = checks["lift (all) >= raw-ft (all) + 10"]
    assert raw["met"] and raw["value"] == pytest.approx(60 - 20 - 10)
    assert checks["lift keeps >= 90% of general questions"]["met"]
    assert not any("icl-full" in t or "lift+icl" in t for t in checks)  # arms not run


def test_general_questions_kept_count_only_what_the_base_got_right(experiment):
    runs = [{"length": 4096, "general": {"base": [1, 1, 0, 1], "lift": [1, 0, 1, 1]}},
            {"length": 4096, "general": {"base": [1, 1, 0, 1], "lift": [0, 0, 0, 1]}}]
    general = experiment.summarize_general(runs)[4096]
    assert general["lift"] == {"kept": 3, "of": 6, "share": 0.5}  # the 3rd question never counts
    assert general["base"]["kept"] == 6 and general["base"]["of"] == 8


def test_overrides_parse_as_json_else_text(experiment):
    assert experiment.parse_overrides(["rank=8", "lr=5e-4", "style=lines"]) == {
        "rank": 8, "lr": 5e-4, "style": "lines"}
    with pytest.raises(SystemExit):
        experiment.parse_overrides(["rank"])


def test_runs_end_to_end_on_the_tiny_model(experiment, tiny_model_path, tmp_path, monkeypatch):
    # --readme writes into the docs page the README links to, between its markers
    readme = tmp_path / "docs" / "lift-experiment.md"
    readme.parent.mkdir()
    readme.write_text(f"before\n{experiment.README_START}\nold\n{experiment.README_END}\nafter\n")
    (tmp_path / "README.md").write_text("untouched\n")
    monkeypatch.setattr(experiment, "ROOT", tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["lift_experiment.py", "--model", str(tiny_model_path), "--lengths", "1024",
            "--docs", "1", "--window", "384", "--questions", "2", "--max-tokens", "8",
            "--work", str(work), "--out", str(out), "--readme",
            "--set", "seg_len=128", "--set", "stride=64", "--set", "context_len=0",
            "--set", "epochs=1", "--set", "rank=4", "--set", "grad_checkpoint=false",
            "--set", "max_tokens=24"]
    monkeypatch.setattr(sys, "argv", argv)
    experiment.main()
    result = json.loads((out / "results.json").read_text())
    summary = result["summary"]["1024"]
    # icl-full: a 1k-token document does not fit the tiny model's own 1k window: skipped.
    assert set(summary) == {"base", "icl-trunc", "raw-ft", "lift", "lift+icl", "rag",
                            "lift+rag", "checked", "lift (oracle tasks)"}
    # the default mode's time per answer against the same model's with the question alone
    default = experiment.default_arm(str(tiny_model_path))
    alone = "base" if default in ("rag", "icl-trunc") else "lift"
    (timed,) = [t for t in result["targets"] if "s per answer" in t["target"]]
    ratio = summary[default]["all"]["seconds"] / summary[alone]["all"]["seconds"]
    assert timed["target"] == f"{default} s per answer <= 2x {alone}'s"
    assert timed["value"] == round(ratio, 2) and timed["met"] == (ratio <= 2)
    (run,) = result["runs"]
    assert run["inside"] == 2 and run["questions"] == 4
    regions = {(r["arm"], r["region"]) for r in result["rows"]}
    assert ("lift", "inside") in regions and ("lift", "outside") in regions
    # Every adapter was made and asked the general questions; the oracle's from its own tasks.
    adapters = {a["adapter"]: a for a in run["absorbs"]}
    assert set(adapters) == {"raw-ft", "lift", "lift (oracle tasks)"}
    assert adapters["lift (oracle tasks)"]["qa_pairs"] == run["facts"]
    assert set(run["general"]) == {"base", *adapters, *(f"{a} (routed)" for a in adapters)}
    # The tiny model's preset trains recite + qa: no rule-made questions of its own to ask.
    assert run["own"] is None and run["covered"] == {"covered": 0, "of": run["questions"]}
    # Each held-out fact asked again in its sentence's own words, scored as `lift` is.
    from lift_mlx.eval.metrics import answer_contains
    echoed = run["echoed"]
    assert echoed["of"] == run["questions"] == len(echoed["examples"])
    assert echoed["right"] == sum(e["right"] for e in echoed["examples"])
    for e in echoed["examples"]:
        assert e["right"] == answer_contains(e["prediction"], e["answers"])
        assert e["question"].endswith("?") and e["answers"][0] not in e["question"]
    own_questions_of_a_cloze_adapter(experiment, adapters["lift"]["path"], tiny_model_path)
    text = readme.read_text()
    assert "old" not in text and "| ~1k tokens | lift |" in text
    assert f"{timed['target']} on ~1k tokens (measured {timed['value']:.2f}x)" in text
    assert text.startswith("before\n") and text.endswith("after\n")
    assert (tmp_path / "README.md").read_text() == "untouched\n"
    # A rerun resumes: the document's rows are read back, nothing is trained again, even
    # with a new work folder (another machine): the records next to results.json suffice.
    (record,) = (out / "records").glob("*/doc-1024-0.json")
    assert json.loads(record.read_text())["rows"] == result["rows"]
    argv[argv.index("--work") + 1] = str(tmp_path / "elsewhere")
    experiment.main()
    assert not list((tmp_path / "elsewhere").rglob("adapters.safetensors"))
    assert json.loads((out / "results.json").read_text())["rows"] == result["rows"]
    # --recorded: a second document has no record, so it is skipped, not run.
    argv[argv.index("--docs") + 1] = "2"
    monkeypatch.setattr(sys, "argv", argv + ["--recorded"])
    experiment.main()
    assert not list((tmp_path / "elsewhere").rglob("doc-1024-1"))
    assert json.loads((out / "results.json").read_text())["rows"] == result["rows"]
    # the table names the command that made it
    assert "made by `python scripts/lift_experiment.py --model" in readme.read_text()
    assert "--max_tokens=24 --recorded`" in readme.read_text().replace("--set ", "--")


def own_questions_of_a_cloze_adapter(experiment, adapter: str, model_path) -> None:
    """`own_questions` asks an adapter its cloze pairs: a sample of them, each scored as the
    held-out questions are."""
    from lift_mlx.config import preset
    from lift_mlx.eval.metrics import answer_contains
    from lift_mlx.models import load_model
    from lift_mlx.tasks.cloze import cloze_pairs

    lm = load_model(str(model_path))
    settings = preset("default", {"tasks": ["recite", "cloze"]})
    document = (Path(adapter) / "document.txt").read_text()
    pairs = {(p.question, p.answer) for p in cloze_pairs(document, settings.synth.window_chars)}
    assert len(pairs) > 5
    made = experiment.training_pairs(document, settings)
    own = experiment.own_questions(lm, adapter, made, 5, 8)
    assert own["of"] == 5 and own["tasks"] == ["cloze"] and len(own["examples"]) == 5
    assert 0 <= own["right"] <= 5
    assert own["right"] == sum(e["right"] for e in own["examples"])
    for e in own["examples"]:
        assert (e["question"], *e["answers"]) in pairs
        assert e["right"] == answer_contains(e["prediction"], e["answers"])
    assert experiment.own_questions(lm, adapter, made, 0, 8) is None
    # a held-out answer counts as covered where a training question asks for it, in any case
    first = sorted(pairs)[0][1]
    records = [{"references": ["no such answer", first.upper()]}, {"references": ["zzz qqq"]}]
    assert experiment.covered(made[1], records) == {"covered": 1, "of": 2}


def test_the_table_goes_into_the_docs_page_with_its_image_linked_from_there(
        experiment, tmp_path, monkeypatch):
    """The image link is relative to docs/lift-experiment.md, where the table now lives, so it
    resolves on GitHub and in tests/test_readme.py's link check."""
    monkeypatch.setattr(experiment, "ROOT", tmp_path)
    page = tmp_path / "docs" / "lift-experiment.md"
    out = tmp_path / "docs" / "lift_experiment"
    out.mkdir(parents=True)
    (out / "lift_experiment.png").write_bytes(b"png")
    page.write_text(f"# Title\n\n{experiment.README_START}\nold\n{experiment.README_END}\n")
    rows = rows_for("lift", {("a", "inside"): [1], ("a", "outside"): [0]})
    summary = experiment.summarize(rows)
    result = {"rows": rows, "summary": summary, "model": "smollm2", "tag": "abc"}
    args = argparse.Namespace(out=str(out), window=1024, max_tokens=24)
    # the scratch folder is this machine's: the command a reader copies leaves it out
    monkeypatch.setattr(sys, "argv", ["lift_experiment.py", "--recorded", "--work", "/tmp/w",
                                      "--readme", "--work=/tmp/v"])
    experiment.write_readme(experiment.format_table(summary, {}), [], args, result)
    text = page.read_text()
    assert text.startswith("# Title\n") and "old" not in text
    assert "(lift_experiment/lift_experiment.png)" in text
    assert "everything in `docs/lift_experiment/results.json`" in text
    assert "made by `python scripts/lift_experiment.py --recorded --readme`." in text


def test_gate_values_of_a_gated_adapter_and_none_for_lora(experiment, tiny_lm, tmp_path,
                                                          demo_text):
    from conftest import FAST

    from lift_mlx.absorb import absorb
    from lift_mlx.eval.datasets import EvalDoc, Question

    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    questions = [Question("q1", "Who chaired the first meeting?", ["Ada Korrin"]),
                 Question("q2", "When was the charter adopted?", ["1921"])]
    eval_doc = EvalDoc("d", demo_text[:1500], questions)
    gated = absorb(doc, tiny_lm, tasks=("recite",), adapter="gated", **FAST)
    values = experiment.gate_values(tiny_lm, str(gated.adapter_path), eval_doc, 8)
    assert values["document"]["questions"] == 2
    assert values["general"]["questions"] == len(experiment.general_questions())
    for name in ("document", "general"):  # near the start, sigmoid(-3), after a short training
        assert 0.01 < values[name]["mean"] < 0.2 and 0.01 < values[name]["last_token"] < 0.2
    lora = absorb(doc, tiny_lm, tasks=("recite",), **FAST)
    assert experiment.gate_values(tiny_lm, str(lora.adapter_path), eval_doc, 8) is None


def test_the_recorded_runs_keep_their_settings_tag():
    """The committed records are filed under the tag of the settings that made them: the
    smollm2 preset before --recite-epochs and --system-prompt (given back by the two options
    docs/lift-experiment.md's command sets) must still hash to it, or `--recorded` (and the
    table it rebuilds) would find none of them."""
    from lift_mlx.config import preset
    from lift_mlx.presets import recommended_settings

    script = load_script("lift_experiment")
    args = script.arguments().parse_args(["--set", "recite_epochs=0",
                                          "--set", "system_prompt=model"])
    settings = preset("default", {**recommended_settings(args.model),
                                  **script.parse_overrides(args.set)})
    tag = script.settings_tag(settings, args)
    records = Path(script.ROOT) / "docs" / "lift_experiment" / "records" / f"smollm2-{tag}"
    assert tag == "7cc604d8a9" and len(list(records.glob("doc-*.json"))) == 6


def test_the_page_table_is_recorded_under_the_current_presets_tag():
    """docs/lift-experiment.md's table is rebuilt from records made with the `smollm2` preset
    as it stands and the default experiment settings: if the preset or a default that shapes
    the adapter changes, the tag moves and the page's command would run every document again,
    so the page must be rebuilt with it."""
    from lift_mlx.config import preset
    from lift_mlx.presets import recommended_settings

    script = load_script("lift_experiment")
    args = script.arguments().parse_args(["--lengths", "4096,8192", "--docs", "4,2",
                                          "--real", "all"])
    tag = script.settings_tag(preset("default", recommended_settings(args.model)), args)
    records = Path(script.ROOT) / "docs" / "lift_experiment" / "records" / f"smollm2-{tag}"
    names = {p.stem for p in records.glob("*.json")} - {"settings"}
    assert names == {script.doc_name(spec) for spec in script.doc_specs(args)}
    page = (Path(script.ROOT) / "docs" / "lift-experiment.md").read_text(encoding="utf-8")
    assert f"settings tag `{tag}`" in page


def test_real_documents_run_with_their_own_questions_and_group(experiment, tiny_model_path,
                                                                tmp_path, monkeypatch, demo_text):
    """A real document of the folder, its hand-written questions marked inside or outside the
    view by their evidence sentence, reported as its own group with the seconds per answer."""
    real = tmp_path / "real"
    real.mkdir()
    text = demo_text[:6000]
    sentences = [s.strip() + "." for s in text.split(".") if len(s.split()) > 6]
    first, middle = sentences[1], sentences[len(sentences) // 2]  # the head, the middle
    (real / "harbour.txt").write_text(text)
    questions = [{"id": f"h{i}", "question": f"What does the text say ({i})?",
                  "answers": [s.split()[-1].strip(".")], "meta": {"evidence": s}}
                 for i, s in enumerate((first, middle))]
    (real / "harbour.jsonl").write_text(json.dumps(
        {"id": "harbour", "document_path": "harbour.txt", "questions": questions}) + "\n")
    monkeypatch.setattr(experiment, "REAL", real)
    out = tmp_path / "out"
    argv = ["lift_experiment.py", "--model", str(tiny_model_path), "--lengths", "",
            "--real", "all", "--window", "512", "--max-tokens", "8", "--arms", "rag,lift,lift+rag",
            "--retrieved-len", "64", "--passage-len", "16", "--no-general",
            "--work", str(tmp_path / "work"), "--out", str(out),
            "--set", "seg_len=128", "--set", "stride=128", "--set", "context_len=0",
            "--set", "epochs=1", "--set", "rank=2", "--set", "grad_checkpoint=false",
            "--set", "tasks=[\"recite\"]"]
    monkeypatch.setattr(sys, "argv", argv)
    experiment.main()
    result = json.loads((out / "results.json").read_text())
    assert set(result["summary"]) == {"real"}
    assert set(result["summary"]["real"]) == {"rag", "lift", "lift+rag"}
    regions = [r["region"] for r in result["rows"] if r["arm"] == "rag"]
    assert regions == ["inside", "outside"]  # the head is in the view, the middle not
    assert all(r["group"] == "real" and r["seconds"] > 0 for r in result["rows"])
    assert "| real documents | rag |" in result["table"]
    assert any(t["target"] == "lift (all) >= rag (all) + 0" for t in result["targets"])
    (record,) = (out / "records").glob("*/real-harbour.json")
    assert json.loads(record.read_text())["run"]["questions"] == 2


def test_docs_gives_one_count_for_every_length_or_one_per_length(experiment):
    def specs(lengths, docs, real=""):
        return experiment.doc_specs(argparse.Namespace(lengths=lengths, docs=docs, real=real))

    assert specs("4096,8192", "2") == [("world", 4096, 0), ("world", 4096, 1),
                                       ("world", 8192, 0), ("world", 8192, 1)]
    assert specs("4096,8192", "3,1", "gpl3-license") == [
        ("world", 4096, 0), ("world", 4096, 1), ("world", 4096, 2), ("world", 8192, 0),
        ("real", "gpl3-license")]
    assert specs("", "3", "gpl3-license") == [("real", "gpl3-license")]
    for bad in ("1,2,3", "2,-1"):
        with pytest.raises(SystemExit, match="one per length"):
            specs("4096,8192", bad)
    for lengths, docs in (("4096", "x"), ("4k", "1"), ("4096", "1.5")):
        with pytest.raises(SystemExit, match="whole numbers"):
            specs(lengths, docs)
