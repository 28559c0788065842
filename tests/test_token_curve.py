"""scripts/token_curve.py: accuracy against trained tokens per document token, from the records
scripts/lift_experiment.py keeps."""

import json
import subprocess
import sys

from conftest import SCRIPTS, load_script

from lift_mlx.config import preset
from lift_mlx.presets import recommended_settings


def _record(folder, doc, doc_tokens, trained, hits: dict):
    rows = [{"doc": doc, "arm": arm, "region": "inside" if i % 2 else "outside",
             "contains": float(h)} for arm, hs in hits.items() for i, h in enumerate(hs)]
    absorbs = [{"adapter": "lift", "trained_tokens": trained, "seconds": 12.5},
               # a later run of the document with another arm reused the stored adapter
               {"adapter": "lift", "trained_tokens": 0, "seconds": 0.1, "reused": True}]
    (folder / f"doc-{doc}.json").write_text(json.dumps(
        {"run": {"doc": doc, "doc_tokens": doc_tokens, "absorbs": absorbs}, "rows": rows}))


def test_each_recipe_is_placed_by_its_trained_tokens_per_document_token(tmp_path):
    curve = load_script("token_curve")
    for tag, settings in (("a1", {"epochs": 2, "lr_schedule": "cosine"}), ("b2", {"epochs": 8})):
        folder = tmp_path / "records" / f"smollm2-{tag}"
        folder.mkdir(parents=True)
        values = preset("default", recommended_settings("smollm2"), **settings).to_dict()
        (folder / "settings.json").write_text(json.dumps(values))
        trained = 1000 * settings["epochs"]
        _record(folder, "x", 400, trained, {"lift": [1, 0, 0, 0], "rag": [1, 1, 0, 0]})
    (tmp_path / "records" / "smollm2-old").mkdir()  # no settings.json: not a recipe we know
    points = curve.points([tmp_path / "records"], ("lift", "rag"))
    lift = {p["recipe"]: p for p in points if p["arm"] == "lift"}
    assert set(lift) == {"lr_schedule=cosine", "preset"}  # the epochs are the line's x
    assert lift["lr_schedule=cosine"]["per_doc_token"] == 5.0  # 2,000 / 400
    assert lift["lr_schedule=cosine"]["epochs"] == 2 and lift["preset"]["per_doc_token"] == 20
    assert lift["preset"]["accuracy"] == 0.25 and lift["preset"]["absorb_seconds"] == 12.5
    base = [p for p in points if p["arm"] == "rag"]
    assert len(base) == 1 and base[0]["recipe"] == "plain base"  # once, whatever the tags
    assert base[0]["trained_tokens"] == 0 and base[0]["accuracy"] == 0.5


def test_a_setting_the_records_predate_counts_as_its_default(tmp_path):
    """Records made before a setting existed were made with its default: against a preset
    that sets it otherwise, they are another recipe, not the preset."""
    curve = load_script("token_curve")
    values = preset("default", recommended_settings("smollm2")).to_dict()
    del values["train"]["recite_epochs"], values["train"]["system_prompt"]
    assert curve.recipe(values, "smollm2") == "system_prompt=model, recite_epochs=0"
    assert curve.recipe(preset("default", recommended_settings("smollm2")).to_dict(),
                        "smollm2") == "preset"


def test_the_committed_records_place_the_earlier_preset_at_its_25_tokens(tmp_path):
    out = tmp_path / "curve"
    printed = subprocess.run([sys.executable, str(SCRIPTS / "token_curve.py"), "--arms", "lift",
                              "--out", str(out)], capture_output=True, text=True, check=True)
    rows = json.loads(out.with_suffix(".json").read_text())
    earlier = "system_prompt=model, recite_epochs=0"  # the smollm2 preset before 2026-12-05
    preset_4k = [r for r in rows if r["recipe"] == earlier and r["doc"].startswith("4096")]
    eight = [r for r in preset_4k if r["epochs"] == 8]
    assert len(eight) >= 3, printed.stdout
    assert all(20 < r["per_doc_token"] < 30 for r in eight)
    # two epochs: a quarter of the tokens
    assert all(5 < r["per_doc_token"] < 7.5 for r in preset_4k if r["epochs"] == 2)
    assert "trained tok / doc tok" in printed.stdout


def test_a_record_copied_into_several_folders_is_one_point(tmp_path):
    """A study keeps copies of the runs it compares: the same absorb, found in two records
    folders, is placed once; two absorbs of one recipe stay two points."""
    curve = load_script("token_curve")
    values = preset("default", recommended_settings("smollm2")).to_dict()
    for study in ("records", "study/records"):
        folder = tmp_path / study / "smollm2-c3"
        folder.mkdir(parents=True)
        (folder / "settings.json").write_text(json.dumps(values))
        _record(folder, "x", 400, 4000, {"lift": [1, 0]})
    folders = [tmp_path / "records", tmp_path / "study" / "records"]
    assert len(curve.points(folders, ("lift",))) == 1
    again = tmp_path / "again" / "records" / "smollm2-c3"
    again.mkdir(parents=True)
    (again / "settings.json").write_text(json.dumps(values))
    _record(again, "x", 400, 4000, {"lift": [1, 1]})  # another absorb: other answers
    assert len(curve.points(folders + [tmp_path / "again" / "records"], ("lift",))) == 2
