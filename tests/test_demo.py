"""`lift-mlx demo`: on the tiny model for the mechanics, on SmolLM2 for what it shows."""

import re

from click.testing import CliRunner

from lift_mlx import store
from lift_mlx.cli import cli
from lift_mlx.demo import QUESTIONS

STAGES = ("model load", "split", "synthesize", "train", "base answers", "adapted answers")


def _run(*args):
    r = CliRunner().invoke(cli, ["demo", "--quiet", *args])
    assert r.exit_code == 0, r.output
    right = re.search(r"base (\d)/(\d), adapted (\d)/(\d)", r.stdout)
    assert right, r.stdout
    for stage in STAGES:
        assert f"{stage} " in r.stdout, stage
    assert r.stdout.count("    base      [") == len(QUESTIONS)
    assert store.is_adapter_dir(store.home() / "demo-adapter")
    return r.stdout, [int(g) for g in right.groups()]


def test_demo_on_the_tiny_model_shows_every_stage(tiny_model_path):
    _run("--model", str(tiny_model_path))


def test_demo_on_smollm2_answers_what_the_base_cannot(smollm2):
    """The demo's claim, measured: with the question alone, the base knows none of the
    document's facts and the adapted model knows most of them."""
    out, (base, n, adapted, _) = _run()
    print(out)
    assert n == len(QUESTIONS) == 3
    assert base == 0 and adapted >= 2, out
