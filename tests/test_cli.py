import json

import pytest
from click.testing import CliRunner

from lift_mlx import store
from lift_mlx.cli import cli

FAST_ARGS = ["--seg-len", "128", "--stride", "64", "--context-len", "32", "--rank", "4",
             "--epochs", "1", "--no-grad-checkpoint", "--qa-per-sentence", "1"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def doc(tmp_path, demo_text):
    path = tmp_path / "charter.md"
    path.write_text(demo_text[:2500])
    return path


def test_absorb_then_ask_reuses_the_stored_adapter(runner, doc, tiny_model_path):
    model = ["--model", str(tiny_model_path)]
    r = runner.invoke(cli, ["absorb", str(doc), *model, "--tasks", "recite", *FAST_ARGS])
    assert r.exit_code == 0, r.output
    adapter = r.stdout.strip().splitlines()[-1]
    assert store.is_adapter_dir(store.Path(adapter))
    for word in ("tokens", "segments", "qa pairs", "training", "final loss", "peak memory",
                 "adapter"):
        assert word in r.stderr
    r = runner.invoke(cli, ["ask", str(doc), "Who owns the lighthouse?", *model,
                            "--tasks", "recite", *FAST_ARGS, "--max-tokens", "8"])
    assert r.exit_code == 0, r.output
    assert "stored; no training needed" in r.stderr
    r = runner.invoke(cli, ["ask", adapter, "Who owns the lighthouse?", "--no-context",
                            "--max-tokens", "8"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["info", adapter])
    assert r.exit_code == 0, r.output
    assert "charter.md" in r.stdout and "rank=4" in r.stdout and "steps" in r.stdout
    meta = json.loads((store.Path(adapter) / "lift_meta.json").read_text())
    assert meta["settings"]["split"]["seg_len"] == 128


def test_chat_answers_until_an_empty_line(runner, doc, tiny_model_path):
    args = ["chat", str(doc), "--model", str(tiny_model_path), "--tasks", "recite",
            *FAST_ARGS, "--max-tokens", "4"]
    r = runner.invoke(cli, args, input="Who owns the lighthouse?\nHow many boats?\n\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("? ") >= 3  # three prompts: two questions and the empty line


def test_stdin_document(runner, tiny_model_path, demo_text):
    r = runner.invoke(cli, ["absorb", "-", "--model", str(tiny_model_path), "--tasks", "recite",
                            *FAST_ARGS, "--quiet"], input=demo_text[:800])
    assert r.exit_code == 0, r.output
    assert json.loads((store.Path(r.stdout.strip()) / "lift_meta.json").read_text())[
        "document"]["source"] == "stdin"


@pytest.mark.parametrize("setup, args, message", [
    (None, ["absorb", "{tmp}/missing.txt"], "No such file"),
    (None, ["absorb", "{tmp}"], "directory"),
    ("empty", ["absorb", "{tmp}/empty.txt"], "empty"),
    ("binary", ["absorb", "{tmp}/blob.bin"], "binary"),
    ("empty", ["ask", "{tmp}/empty.txt", "  "], "question is empty"),
    ("notadapter", ["info", "{tmp}/notadapter"], "not a lift-mlx adapter"),
    (None, ["absorb", "{doc}", "--stride", "300", "--seg-len", "256"], "--stride"),
    (None, ["absorb", "{doc}", "--model", "./nowhere"], "neither an existing directory"),
    (None, ["absorb", "{doc}", "--model", "someone/missing-model"], "Hugging Face cache"),
])
def test_bad_input_is_one_line_and_stores_nothing(runner, tmp_path, doc, setup, args, message,
                                                  tiny_model_path, isolated_store):
    if setup == "empty":
        (tmp_path / "empty.txt").write_text("  \n\n ")
    elif setup == "binary":
        (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 20)
    elif setup == "notadapter":
        (tmp_path / "notadapter").mkdir()
    args = [a.format(tmp=tmp_path, doc=doc) for a in args]
    if "--model" not in args and args[0] == "absorb":
        args += ["--model", str(tiny_model_path)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)  # no traceback
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not (isolated_store / "adapters").exists()


@pytest.mark.parametrize("args", [["--rank", "-1"], ["--epochs", "0"], ["--tasks", "dance"],
                                  ["--preset", "huge"], ["--lr", "0"]])
def test_invalid_option_values_are_usage_errors(runner, doc, args):
    r = runner.invoke(cli, ["absorb", str(doc), *args])
    assert r.exit_code == 2 and "Invalid value" in r.stderr


@pytest.mark.parametrize("command", ["absorb", "ask", "chat", "info", "demo"])
def test_help_is_a_manual(runner, command):
    r = runner.invoke(cli, [command, "--help"])
    assert r.exit_code == 0
    assert len(r.stdout.splitlines()) > 5


def test_help_of_absorb_documents_every_setting(runner):
    out = runner.invoke(cli, ["absorb", "--help"]).stdout
    for flag in ("--seg-len", "--stride", "--context-len", "--tasks", "--qa-per-sentence",
                 "--generator", "--rank", "--scale", "--lr", "--epochs", "--batch-size",
                 "--grad-checkpoint", "--compile", "--seed", "--preset", "--out"):
        assert flag in out, flag


def test_recite_absorb_cuts_the_document_nll_and_loads_in_mlx_lm(runner, small_model_path):
    """The acceptance check: a ~1000-word document, recite only, rank 16, lr 1e-3, 10 epochs,
    256/96 segments (other settings at their defaults) on a tiny fp32 llama."""
    import mlx_lm
    from conftest import DEMO_DOC

    from lift_mlx.prompts import encode
    from lift_mlx.samples import Sample
    from lift_mlx.train import mean_nll

    r = runner.invoke(cli, ["absorb", str(DEMO_DOC), "--model", str(small_model_path),
                            "--tasks", "recite", "--rank", "16", "--lr", "1e-3", "--epochs", "10",
                            "--seg-len", "256", "--stride", "96", "--quiet"])
    assert r.exit_code == 0, r.output
    adapter = r.stdout.strip()
    base, tok = mlx_lm.load(str(small_model_path))
    adapted, _ = mlx_lm.load(str(small_model_path), adapter_path=adapter)  # plain mlx-lm
    ids = encode(tok, DEMO_DOC.read_text())
    doc = [Sample(tuple(ids[i:i + 256]), (1,) * len(ids[i:i + 256]), "doc")
           for i in range(0, len(ids), 256)]  # the document as plain text, every token
    before, after = mean_nll(base, doc, tok.pad_token_id), mean_nll(adapted, doc, tok.pad_token_id)
    assert after <= 0.65 * before, (before, after)


def test_every_setting_option_lands_in_the_field_it_names(runner, doc, tiny_model_path):
    """Each option, given a value other than its default, is stored in its own stage's field;
    `--batch-size` once set the generator's batch (the first stage with that name won)."""
    given = {"--seg-len": ("split", "seg_len", 96), "--stride": ("split", "stride", 40),
             "--context-len": ("split", "context_len", 16),
             "--qa-per-sentence": ("synth", "qa_per_sentence", 3),
             "--generator-style": ("synth", "style", "json"),
             "--generator-batch-size": ("synth", "generator_batch_size", 3),
             "--rank": ("train", "rank", 3), "--scale": ("train", "scale", 1.5),
             "--lr": ("train", "lr", 3e-3), "--epochs": ("train", "epochs", 2),
             "--batch-size": ("train", "batch_size", 1), "--seed": ("train", "seed", 7),
             "--loss-mean": ("train", "loss_mean", "samples"),
             "--tasks": ("train", "tasks", ["recite"])}
    args = ["absorb", str(doc), "--model", str(tiny_model_path), "--quiet",
            "--no-grad-checkpoint", "--no-compile"]
    for flag, (_, _, value) in given.items():
        args += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((store.Path(r.stdout.strip()) / "lift_meta.json").read_text())
    for flag, (stage, name, value) in given.items():
        assert meta["settings"][stage][name] == value, flag
    assert meta["settings"]["train"]["grad_checkpoint"] is False
    assert meta["settings"]["train"]["compile"] is False
    segments = meta["report"]["segments"]
    assert meta["report"]["train"]["steps"] == 2 * segments  # batch 1: one step per sample
