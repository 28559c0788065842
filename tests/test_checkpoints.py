"""Training checkpoints: a run stopped after a checkpoint and resumed from it trains the same
batches in the same order, and ends with the adapter an uninterrupted run makes; an absorb
really interrupted (Ctrl-C in a child process) resumes where it stopped, its progress bar
counts the resumed run's own steps, and its entry the time of both runs."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx
import pytest
from click.testing import CliRunner
from conftest import FAST

from lift_mlx import store
from lift_mlx.absorb import absorb
from lift_mlx.adapters import LORA
from lift_mlx.checkpoints import STATE_FILE, Checkpoint, Spent
from lift_mlx.cli import cli
from lift_mlx.config import TrainSettings
from lift_mlx.errors import LiftError
from lift_mlx.models import load_model
from lift_mlx.progress import Progress
from lift_mlx.prompts import encode
from lift_mlx.samples import qa_sample, recite_samples
from lift_mlx.train import train

SETTINGS = TrainSettings(rank=4, lr=1e-3, epochs=3, batch_size=2, grad_checkpoint=False,
                         compile=False, checkpoint_every=3)


def _run(path, recite, qa, checkpoint=None, stop_at=None, settings=SETTINGS):
    """Train a fresh copy of the model on `recite`, with `qa` arriving once training runs;
    a KeyboardInterrupt once step `stop_at` is done. The report and the adapter's arrays."""
    lm = load_model(str(path))
    LORA.attach(lm.model, settings)

    def on_step(step, total, loss, tokens):
        if step == stop_at:
            raise KeyboardInterrupt

    report = train(lm.model, recite, settings, 0, on_step, arriving=iter([qa]),
                   longest=max(len(s) for s in qa), checkpoint=checkpoint)
    return report, LORA.trainable(lm.model)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_resumed_run_ends_as_an_uninterrupted_one(compiled, tiny_model_path, tiny_lm,
                                                    demo_text, tmp_path):
    """Eager and compiled (whose step holds the optimizer's state it was traced with)."""
    settings = dataclasses.replace(SETTINGS, compile=compiled)
    tok = tiny_lm.tokenizer
    recite = recite_samples(tok, encode(tok, demo_text)[:700], 64, 32, 0, random.Random(0))
    qa = [qa_sample(tok, f"Who was chair in year {i}?", "Ada Korrin") for i in range(5)]
    whole, weights = _run(tiny_model_path, recite, qa, settings=settings)
    assert whole.steps > 12

    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model_path, recite, qa, Checkpoint(folder, 3, LORA.trainable), stop_at=8,
             settings=settings)
    checkpoint = Checkpoint(folder, 3, LORA.trainable)
    assert checkpoint.state()["step"] == 6  # the last multiple of 3 before the stop
    assert sorted(p.name.split(".")[0] for p in folder.glob("step-*")) == ["step-00000006"] * 3

    resumed, again = _run(tiny_model_path, recite, qa, checkpoint, settings=settings)
    assert resumed.steps == whole.steps and resumed.sample_views == whole.sample_views
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    assert resumed.tokens == whole.tokens
    for name, value in weights.items():
        assert mx.allclose(again[name], value, atol=1e-6).item(), name


def _stopped_at_step_4(tiny_model_path, tok, demo_text: str, folder):
    """A run of recite samples and one QA sample, stopped at step 4 with a checkpoint every 3
    steps in `folder`; its recite samples."""
    recite = recite_samples(tok, encode(tok, demo_text)[:400], 64, 32, 0, random.Random(0))
    qa = [qa_sample(tok, "Who?", "Ada Korrin")]
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model_path, recite, qa, Checkpoint(folder, 3, LORA.trainable), stop_at=4)
    return recite


def test_a_checkpoint_that_does_not_fit_is_not_resumed(tiny_model_path, tiny_lm, demo_text,
                                                       tmp_path):
    """Other samples (their buckets differ) start the run over instead."""
    tok = tiny_lm.tokenizer
    folder = tmp_path / "checkpoint"
    recite = _stopped_at_step_4(tiny_model_path, tok, demo_text, folder)
    longer = [qa_sample(tok, "Who?", "Ada Korrin " * 60)]
    report, _ = _run(tiny_model_path, recite, longer, Checkpoint(folder, 3, LORA.trainable))
    fresh, _ = _run(tiny_model_path, recite, longer)
    assert report.losses == pytest.approx(fresh.losses, rel=1e-5)


def test_a_checkpoint_kept_before_runs_were_counted_resumes_as_one_run_of_its_training(
        tiny_model_path, tiny_lm, demo_text, tmp_path):
    """A state.json without "spent" (an older lift-mlx's): one run, its training's seconds."""
    tok = tiny_lm.tokenizer
    folder = tmp_path / "checkpoint"
    recite = _stopped_at_step_4(tiny_model_path, tok, demo_text, folder)
    state = json.loads((folder / STATE_FILE).read_text())
    assert state.pop("spent")["runs"] == 1
    (folder / STATE_FILE).write_text(json.dumps(state))
    checkpoint = Checkpoint(folder, 3, LORA.trainable)
    _run(tiny_model_path, recite, [qa_sample(tok, "Who?", "Ada Korrin")], checkpoint)
    assert checkpoint.before == Spent(1, state["report"]["seconds"])
    assert checkpoint.spent().runs == 2


ARGS = ["--seg-len", "128", "--stride", "64", "--context-len", "32", "--rank", "4",
        "--no-grad-checkpoint", "--tasks", "recite", "--epochs", "15", "--checkpoint-every", "5"]


def _absorb_process(doc: Path, model: Path, home: Path) -> subprocess.Popen:
    # Ctrl-C as at a terminal: a test run started in the background inherits SIGINT ignored,
    # and Python then never turns it into KeyboardInterrupt.
    return subprocess.Popen([sys.executable, "-m", "lift_mlx.cli", "absorb", str(doc), "--model",
                             str(model), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "LIFT_MLX_HOME": str(home)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_an_interrupted_absorb_resumes_from_its_checkpoint(tmp_path, demo_text,
                                                           tiny_model_path, isolated_store):
    doc = tmp_path / "charter.md"
    doc.write_text(demo_text[:3000])
    reference = _absorb_process(doc, tiny_model_path, tmp_path / "reference-home")
    proc = _absorb_process(doc, tiny_model_path, isolated_store)
    deadline = time.monotonic() + 120
    while not list(store.checkpoints_dir().glob(f"*/{STATE_FILE}")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "no adapter was stored" in err and "Training was checkpointed at step" in err, err
    assert out == "" and store.entry_dirs() == []
    (folder,) = store.checkpoints_dir().iterdir()
    step = Checkpoint(folder, 5, LORA.trainable).state()["step"]
    assert step % 5 == 0 and step > 0

    proc = _absorb_process(doc, tiny_model_path, isolated_store)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"Resuming training at step {step}," in err
    assert not folder.exists()  # gone once the adapter is stored
    ref_out, ref_err = reference.communicate(timeout=120)
    assert reference.returncode == 0, ref_err
    ours, theirs = Path(out.strip()), Path(ref_out.strip())
    assert ours.name == theirs.name  # the same key
    mine = store.verify(ours)["report"]["train"]
    whole = store.verify(theirs)["report"]["train"]
    assert mine["steps"] == whole["steps"] > step
    assert mine["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-5)
    a, b = (mx.load(str(p / store.ADAPTER_FILE)) for p in (ours, theirs))
    for name in b:
        assert mx.allclose(a[name], b[name], atol=1e-6).item(), name


def test_how_often_checkpoints_are_kept_is_no_part_of_the_adapter_key(tiny_lm, tmp_path,
                                                                      demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    first = absorb(doc, tiny_lm, tasks=("recite",), **{**FAST, "checkpoint_every": 1})
    assert not first.report.reused and first.report.train.steps > 1
    assert not any(store.checkpoints_dir().iterdir())  # removed once the adapter is stored
    again = absorb(doc, tiny_lm, tasks=("recite",), **{**FAST, "checkpoint_every": 7})
    assert again.report.reused and again.adapter_path == first.adapter_path
    assert again.meta["settings"]["train"]["checkpoint_every"] == 1  # as the first one ran


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_checkpoint_on_a_full_disk_is_one_error_and_leaves_no_partial_files(
        tiny_model_path, tiny_lm, demo_text, tmp_path):
    """MLX's `[write] Unable to write` became a traceback and left the step's partial files:
    the first step's optimizer file here is a link to /dev/full, where every write fails with
    ENOSPC, as on a full disk (after the adapter's file of the same step was written)."""
    tok = tiny_lm.tokenizer
    recite = recite_samples(tok, encode(tok, demo_text)[:700], 64, 32, 0, random.Random(0))
    qa = [qa_sample(tok, "Who was chair?", "Ada Korrin")]
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "step-00000003.optimizer.safetensors").symlink_to("/dev/full")
    with pytest.raises(LiftError) as e:
        _run(tiny_model_path, recite, qa, Checkpoint(folder, 3, LORA.trainable))
    assert str(e.value).startswith(f"cannot write to {folder}: Unable to write ")
    assert str(e.value).endswith("; free space on its disk")
    assert list(folder.iterdir()) == [] and Path("/dev/full").is_char_device()


class _Tty(io.StringIO):
    def isatty(self):
        return True


class _TrainBar(Progress):
    """Bars drawn as on a terminal into a string; each update of the training bar kept as
    (done, units, total, time). At the update whose done is `stop_at`, `at_stop()` runs, then
    a Ctrl-C."""

    def __init__(self, stop_at: int | None = None, at_stop=None):
        super().__init__(stream=_Tty())
        self.stop_at, self.at_stop = stop_at, at_stop
        self.updates: list[tuple[int, int, int, float]] = []

    @contextmanager
    def bar(self, label, total, unit="tok"):
        with super().bar(label, total, unit) as update:
            def kept(done, units=0, note="", total=None):
                if label == "train":
                    self.updates.append((done, units, total, time.perf_counter()))
                    if done == self.stop_at:
                        self.at_stop()
                        raise KeyboardInterrupt
                update(done, units, note, total)

            yield kept

    def last_line(self) -> str:
        """The training bar as it was drawn last."""
        return [line for line in self.stream.getvalue().split("\r") if "train" in line][-1]

    def seconds(self) -> float:
        """From the training bar's first update to its last."""
        return self.updates[-1][3] - self.updates[0][3]


RESUMABLE = dict(FAST, tasks=("recite",), epochs=6, batch_size=2, checkpoint_every=3)


def test_a_resumed_absorb_counts_its_own_steps_and_stores_the_time_of_both_runs(
        tiny_lm, tmp_path, demo_text):
    """The bar showed `107/231 ... 650 tok/s` after a resume at step 100 (the resumed steps
    as done in no time) and ended at `240/231`; `docs list` showed the resumed run's time
    alone."""
    doc = tmp_path / "charter.md"
    doc.write_text(demo_text[:3000])
    whole_bar = _TrainBar()
    whole = absorb(doc, tiny_lm, out=tmp_path / "whole", progress=whole_bar, **RESUMABLE)
    steps, tokens = whole.report.train.steps, whole.report.train.tokens
    assert steps > 12
    assert whole_bar.updates[-1][:3] == (steps, tokens, steps)  # the total was exact
    assert f" {steps}/{steps} " in whole_bar.last_line()

    # Interrupted at step 7, a second after the checkpoint of step 6 was saved.
    saved = {}

    def at_stop():
        (folder,) = store.checkpoints_dir().iterdir()
        saved.update(json.loads((folder / STATE_FILE).read_text()))
        time.sleep(1.0)

    first_bar = _TrainBar(stop_at=7, at_stop=at_stop)
    with pytest.raises(KeyboardInterrupt):
        absorb(doc, tiny_lm, progress=first_bar, **RESUMABLE)
    (folder,) = store.checkpoints_dir().iterdir()
    state = json.loads((folder / STATE_FILE).read_text())
    assert saved["step"] == state["step"] == 6 and state["spent"]["runs"] == 1
    first_s = state["spent"]["seconds"]
    # counted up to the Ctrl-C: the work after the last save cost time too
    assert first_s >= saved["spent"]["seconds"] + 1.0
    assert first_s >= first_bar.seconds() + 1.0

    second_bar = _TrainBar()
    resumed = absorb(doc, tiny_lm, progress=second_bar, **RESUMABLE)
    r = resumed.report
    assert r.train.steps == steps and r.train.tokens == tokens
    # The bar counts this run's steps and tokens only: its rate and ETA are this run's.
    assert [u[0] for u in second_bar.updates] == list(range(1, steps - 6 + 1))
    assert {u[2] for u in second_bar.updates} == {steps - 6}
    assert second_bar.updates[-1][1] == tokens - state["report"]["tokens"]
    assert f" {steps - 6}/{steps - 6} " in second_bar.last_line()

    this_run = sum(v for k, v in r.seconds.items() if k != "load")
    assert r.runs == 2 and r.total_seconds == pytest.approx(first_s + this_run)
    stored = store.verify(resumed.adapter_path)["report"]
    assert stored["runs"] == 2 and stored["total_seconds"] == pytest.approx(r.total_seconds)
    assert stored["total_seconds"] >= first_bar.seconds() + second_bar.seconds() + 1.0

    runner = CliRunner()
    listed = runner.invoke(cli, ["docs", "list"])
    assert listed.exit_code == 0, listed.output
    (row,) = listed.stdout.splitlines()[1:]
    assert row.endswith(f"{stored['total_seconds']:.1f}s over 2 runs"), row
    info = runner.invoke(cli, ["info", "charter"]).stdout
    assert f"absorbed in {stored['total_seconds']:.1f}s over 2 runs" in info
    assert "(the last of 2 runs)" in info
