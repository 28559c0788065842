import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

from lift_mlx import backend
from lift_mlx.cli import cli
from lift_mlx.doctor import Report, recommended_model

ROOT = Path(__file__).resolve().parents[1]


def _doctor_json(home: Path, **env) -> dict:
    env = {**os.environ, "LIFT_MLX_HOME": str(home), "PYTHONPATH": str(ROOT), **env}
    run = subprocess.run([sys.executable, "-m", "lift_mlx.cli", "doctor", "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                         check=True)
    return json.loads(run.stdout)


def test_doctor_json_reports_the_machine_in_a_few_seconds(tmp_path):
    report = _doctor_json(tmp_path)
    assert set(report) == {f.name for f in fields(Report)}
    assert report["matmul_gflops"] > 0
    assert report["backend"] in ("metal", "cuda", "cpu")
    assert report["home"] == str(tmp_path) and report["home_bytes"] == 0
    assert report["adapters"] == 0 and report["smollm2"] == "not fetched"
    assert report["recommended_model"] and report["platform"] and report["mlx"]
    assert report["seconds"] < 5  # the probe and the walks, imports excluded
    for problem in report["problems"]:
        assert set(problem) == {"problem", "fix"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS is chosen on Linux")
def test_doctor_names_the_reference_blas_and_its_fix(tmp_path):
    slow = _doctor_json(tmp_path, LIFT_MLX_OPENBLAS="0")
    if slow["backend"] != "cpu":
        pytest.skip("MLX computes on a GPU here")
    assert slow["blas"] == "reference BLAS bundled with MLX" and slow["blas_path"] is None
    assert [p["fix"] for p in slow["problems"]] == ["unset LIFT_MLX_OPENBLAS"]


@pytest.mark.parametrize("kind, memory, model", [
    ("cpu", 64, "smollm2"), ("metal", 4, "smollm2"), ("metal", 8, "qwen-0.5b"),
    ("metal", 16, "qwen-1.5b"), ("metal", 24, "qwen-3b"), ("metal", 64, "qwen-7b"),
])
def test_the_recommended_model_is_the_largest_preset_for_the_memory(kind, memory, model):
    assert recommended_model(kind, memory)[0] == model


def test_doctor_says_it_in_a_few_lines():
    out = CliRunner().invoke(cli, ["doctor"]).stdout
    lines = out.splitlines()
    assert 7 <= len(lines) <= 12, out
    assert lines[0].startswith("platform") and "GFLOP/s" in lines[2]
    if backend.blas.source is not None:
        assert backend.blas.path in lines[1]
