"""One absorb across the ranks that `mlx.launch` starts (lift_mlx/distributed.py): two local
ranks over loopback (the ring backend) store the adapter one process trains at the same global
batch, in one entry; a batch the ranks do not divide, or ranks given different documents, are
refused before training; a rank interrupted or killed stops every rank within seconds, with no
entry. Without a launcher: the batch shares, the QA shares put together, the single process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import load_script

from lift_mlx import distributed, store
from lift_mlx.absorb import Absorbing
from lift_mlx.distributed import SINGLE, World
from lift_mlx.errors import LiftError
from lift_mlx.samples import Sample, make_batch
from lift_mlx.synthesize import SynthReport
from lift_mlx.tasks.qa import merge_shares
from lift_mlx.train import _target_index

ROOT = Path(__file__).resolve().parent.parent
# mlx's own launcher, as `mlx.launch` runs it (its console script may not be on PATH)
LAUNCH = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
FAST_ARGS = ["--seg-len", "128", "--stride", "64", "--context-len", "32", "--rank", "4",
             "--no-grad-checkpoint", "--qa-per-sentence", "1"]
STOP_S = 5.0  # every rank gone this long after one is interrupted or killed

launched = pytest.mark.skipif(not mx.distributed.is_available(),
                              reason="this MLX has no distributed backend")


class _Group:
    """A stand-in for mx.distributed.Group: a rank and a size, no exchanges."""

    def __init__(self, rank: int, size: int):
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


def _samples(n: int) -> list[Sample]:
    return [Sample(tuple(range(1, 6 + i)), (0, 0) + (1,) * (3 + i), "recite") for i in range(n)]


def test_one_process_is_a_world_of_one_that_exchanges_nothing(monkeypatch):
    for name in distributed.LAUNCHED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "_world", None)
    assert distributed.world() is SINGLE and (SINGLE.rank, SINGLE.size) == (0, 1)
    batch = make_batch(_samples(3), 4, 16, 0)
    grads = {"a": mx.ones((2, 3))}
    assert SINGLE.share(batch) is batch and SINGLE.sum(grads) is grads
    assert SINGLE.gather({"x": 1}) == [{"x": 1}] and SINGLE.first(7) == 7
    SINGLE.agree(document="a")
    SINGLE.check_batch(3)


def test_each_rank_takes_its_run_of_rows_and_the_batch_must_split_evenly():
    batch = make_batch(_samples(3), 4, 16, 0)  # 3 samples, one empty row
    first, second = (World(_Group(r, 2)).share(batch) for r in (0, 1))
    assert np.array_equal(np.concatenate([first.inputs, second.inputs]), batch.inputs)
    assert (first.rows, second.rows) == (2, 1)
    assert float(first.mask.sum() + second.mask.sum()) == float(batch.mask.sum())
    World(_Group(1, 2)).check_batch(4)
    with pytest.raises(LiftError, match=r"--batch-size 3 does not split over 2 ranks; use a "
                                        r"multiple of 2 \(e.g. --batch-size 4\)"):
        World(_Group(0, 2)).check_batch(3)


def test_rows_without_targets_train_on_one_position_of_weight_zero():
    """A short last batch leaves a rank rows with no targets; the output layer still needs
    one position (an empty one fails in logsumexp), and weight 0 keeps it out of the loss."""
    mask = np.zeros((2, 5), dtype=np.float32)
    targets = np.full((2, 5), 7, dtype=np.int32)
    index, ids, weights = _target_index(mask, targets)
    assert index.tolist() == [0] and ids.tolist() == [7] and weights.tolist() == [0.0]


def test_the_ranks_qa_shares_come_together_in_request_order_duplicates_dropped():
    def share(by_request: dict, **report) -> dict:
        return {"kept": {str(i): [{"question": q, "answer": a} for q, a in pairs]
                         for i, pairs in by_request.items()},
                "report": asdict(SynthReport(requests=4, kept=2, **report))}

    shares = [share({0: [("Who keeps the light?", "Marta")], 2: [("When was it built?", "1827")]},
                    generated_tokens=10, seconds=1.0, dropped={"ungrounded": 1}),
              share({1: [("Who keeps the light ?", "Vell")], 3: [("What color is it?", "red")]},
                    generated_tokens=12, seconds=2.0)]
    pairs, report = merge_shares(shares, seen={"what color is it"})
    assert [p.answer for p in pairs] == ["Marta", "1827"]  # request 1 repeats 0; 3 was seen
    assert report.kept == 2 and report.dropped == {"ungrounded": 1, "duplicate": 2}
    assert (report.requests, report.generated_tokens, report.seconds) == (4, 22, 2.0)


def test_python_dash_m_lift_mlx_is_the_command():
    run = subprocess.run([sys.executable, "-m", "lift_mlx", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env=_env(Path(os.environ["LIFT_MLX_HOME"])),
                         timeout=60)
    assert run.returncode == 0 and "Usage: lift-mlx" in run.stdout, run.stderr


def _env(home: Path) -> dict:
    env = os.environ.copy()
    env.update(LIFT_MLX_HOME=str(home), PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]), OPENBLAS_NUM_THREADS="1")
    return env


def _launch(command: list[str], home: Path, ranks: int = 2) -> subprocess.Popen:
    """`mlx.launch -n RANKS --backend ring -- COMMAND` on loopback, in a session of its own
    (so that a failed test ends every process it started)."""
    return subprocess.Popen(
        [*LAUNCH, "-n", str(ranks), "--backend", "ring", "--starting-port",
         str(load_script("bench_distributed").free_port(ranks)), "--", *command],
        cwd=ROOT, env=_env(home), stdin=subprocess.PIPE,  # a pipe: /dev/null would spin it
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _absorb(*args: str) -> list[str]:
    return [sys.executable, "-m", "lift_mlx", "absorb", *args]


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None or _alive(proc):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _alive(proc: subprocess.Popen) -> bool:
    try:
        os.killpg(proc.pid, 0)
        return True
    except ProcessLookupError:
        return False


def _doc(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


@launched
def test_two_ranks_store_the_adapter_one_process_trains_at_the_same_global_batch(
        tmp_path, demo_text, tiny_model_path, isolated_store):
    # 17 recite samples in batches of 4: each epoch's last batch leaves rank 1 no rows
    doc = _doc(tmp_path, "charter.md", demo_text[:3000])
    args = [str(doc), "--model", str(tiny_model_path), *FAST_ARGS, "--tasks", "recite",
            "--epochs", "3", "--batch-size", "4"]
    single = subprocess.run(_absorb(*args), cwd=ROOT, env=_env(tmp_path / "single-home"),
                            capture_output=True, text=True, timeout=60)
    assert single.returncode == 0, single.stderr
    # each rank's 2 rows one at a time: the micro-batches' share of the global mean too
    proc = _launch(_absorb(*args, "--micro-batch", "1"), isolated_store)
    out, err = _finish(proc, 90)
    one, two = Path(single.stdout.strip()), Path(out.strip())
    assert one.name == two.name, err  # the same key; rank 0 alone prints the path
    assert store.entry_dirs() == [two]
    a, b = (mx.load(str(p / store.ADAPTER_FILE)) for p in (one, two))
    assert a.keys() == b.keys()
    diff = max(mx.abs(a[k] - b[k]).max().item() for k in a)
    rel = diff / max(mx.abs(a[k]).max().item() for k in a)
    print(f"two ranks vs one process: max abs diff / max abs value {rel:.2e}")
    assert rel <= 1e-4
    meta, single_meta = store.verify(two), store.verify(one)
    assert meta["report"]["ranks"] == 2 and single_meta["report"]["ranks"] == 1
    assert meta["report"]["train"]["steps"] == single_meta["report"]["train"]["steps"] == 15
    assert meta["report"]["train"]["tokens"] == single_meta["report"]["train"]["tokens"]
    assert err.count("final loss") == 1 and "on 2 ranks" in err  # rank 0's summary alone
    assert "Traceback" not in err


@launched
def test_qa_generation_is_shared_out_and_put_together_on_every_rank(
        tmp_path, demo_text, tiny_model_path, isolated_store):
    doc = _doc(tmp_path, "charter.md", demo_text[:1200])
    proc = _launch(_absorb(str(doc), "--model", str(tiny_model_path), *FAST_ARGS, "--tasks",
                           "recite,qa", "--generator-style", "lines", "--epochs", "1"),
                   isolated_store)
    out, err = _finish(proc, 120)
    assert store.entry_dirs() == [Path(out.strip())], err
    synth = store.verify(Path(out.strip()))["report"]["synth"]
    # every request written once, by one rank or the other; rank 0 cached them
    assert synth["requests"] >= 4 and sum(synth["dropped"].values()) + synth["kept"] >= 4
    assert not synth["cached"] and len(list((isolated_store / "qa-cache").glob("*.json"))) == 1
    assert err.count("warning: the generator wrote no usable") <= 1 and "Traceback" not in err


@launched
def test_a_batch_the_ranks_do_not_divide_is_refused_on_every_rank(tmp_path, demo_text,
                                                                  tiny_model_path):
    doc = _doc(tmp_path, "charter.md", demo_text[:1200])
    proc = _launch(_absorb(str(doc), "--model", str(tiny_model_path), *FAST_ARGS, "--tasks",
                           "recite", "--batch-size", "3"), Path(os.environ["LIFT_MLX_HOME"]))
    out, err = _finish(proc, 60)
    refusal = "Error: --batch-size 3 does not split over 2 ranks; use a multiple of 2"
    assert err.count(refusal) == 2 and "Traceback" not in err, err
    assert out == "" and store.entry_dirs() == []


@launched
def test_ranks_given_different_documents_are_refused_before_training(tmp_path, demo_text,
                                                                     tiny_model_path):
    for rank in (0, 1):
        _doc(tmp_path, f"doc{rank}.md", demo_text[rank * 600:rank * 600 + 1200])
    # each rank reads doc$MLX_RANK.md
    command = ["sh", "-c", f'exec "$0" -m lift_mlx absorb {tmp_path}/doc"$MLX_RANK".md '
               f"--model {tiny_model_path} {' '.join(FAST_ARGS)} --tasks recite",
               sys.executable]
    proc = _launch(command, Path(os.environ["LIFT_MLX_HOME"]))
    out, err = _finish(proc, 60)
    assert err.count("the ranks disagree on the document (rank 0 ") == 2, err
    assert "give every rank the same DOC, --model and options" in err
    assert "Traceback" not in err and out == "" and store.entry_dirs() == []


def _ranks(launcher: int) -> dict[int, int]:
    """rank -> pid of the processes mlx.launch started (Linux: /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for entry in env:
            if entry.startswith(b"MLX_RANK="):
                found[int(entry[len(b"MLX_RANK="):])] = int(stat.parent.name)
    return found


@launched
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks in /proc")
@pytest.mark.parametrize("sig,rank", [(signal.SIGTERM, 1), (signal.SIGKILL, 1),
                                      (signal.SIGINT, 0)],
                         ids=["sigterm-rank-1", "kill-rank-1", "ctrl-c-rank-0"])
def test_a_rank_interrupted_or_killed_stops_every_rank_within_seconds_storing_nothing(
        sig, rank, tmp_path, demo_text, tiny_model_path, isolated_store):
    doc = _doc(tmp_path, "charter.md", demo_text[:3000])
    proc = _launch(_absorb(str(doc), "--model", str(tiny_model_path), *FAST_ARGS, "--tasks",
                           "recite", "--epochs", "1000"), isolated_store)
    try:
        deadline = time.monotonic() + 60
        while not (isolated_store / "locks").is_dir():  # rank 0 holds the lock: they agreed
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # training now
        ranks = _ranks(proc.pid)
        assert set(ranks) == {0, 1}, ranks
        sent = time.monotonic()
        os.kill(ranks[rank], sig)
        out, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:  # a failed assertion: end every process it started
            _finish(proc, 0.1)
    said = [line for line in err.splitlines() if "rank " in line and " of 2" in line]
    print(f"{sig.name} to rank {rank}: every rank gone {stopped:.2f}s after the signal; "
          f"said: {said}")
    assert stopped < STOP_S, err
    assert "Traceback" not in err, err
    survivors = [0, 1] if sig != signal.SIGKILL else [1 - rank]
    for r in survivors:  # one line each: stopped by the signal, or by the others stopping
        assert any(f"rank {r} of 2: " in line and ("stopped by a signal" in line
                                                   or "another rank stopped" in line)
                   for line in said), err
    assert "no adapter was stored" in err
    assert out == "" and store.entry_dirs() == []


@launched
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks in /proc")
def test_a_rank_signalled_while_mlx_holds_it_waiting_leaves_on_its_own(
        tmp_path, demo_text, tiny_model_path, isolated_store):
    """Rank 0 waits for the store's lock (another absorb of the document holds it) while rank
    1 waits for rank 0 inside MLX, where Python's signal handler cannot run: rank 1 says so and
    leaves GRACE_S after the signal, and mlx.launch stops rank 0."""
    doc = _doc(tmp_path, "charter.md", demo_text[:3000])
    args = [str(doc), "--model", str(tiny_model_path), *FAST_ARGS, "--tasks", "recite",
            "--epochs", "1000"]
    holder = subprocess.Popen(_absorb(*args), cwd=ROOT, env=_env(isolated_store),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = None
    try:
        deadline = time.monotonic() + 60
        while not (isolated_store / "locks").is_dir():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc = _launch(_absorb(*args), isolated_store)
        heard = []
        reader = threading.Thread(target=lambda: heard.extend(proc.stderr), daemon=True)
        reader.start()
        while not any("Waiting for another absorb" in line for line in heard):
            assert proc.poll() is None and time.monotonic() < deadline + 60, heard
            time.sleep(0.05)
        time.sleep(0.5)  # rank 1 waits in the exchange that follows
        ranks = _ranks(proc.pid)
        sent = time.monotonic()
        os.kill(ranks[1], signal.SIGTERM)
        proc.wait(timeout=30)
        stopped = time.monotonic() - sent
        reader.join(10)
    finally:
        holder.kill()
        holder.wait(10)
        if proc is not None and proc.poll() is None:
            _finish(proc, 0.1)
    err = "".join(heard)
    print(f"rank 1 signalled inside MLX: every rank gone {stopped:.2f}s after the signal")
    assert distributed.GRACE_S < stopped < STOP_S, err
    assert "rank 1 of 2: stopped by a signal while MLX held it" in err
    assert "rank 0 of 2: absorb of" in err and "Traceback" not in err
    assert store.entry_dirs() == []


def test_answering_while_absorbing_is_refused_across_ranks(monkeypatch):
    """`ask --now` answers from the base at once: under mlx.launch every rank would."""
    monkeypatch.setattr(distributed, "_world", World(_Group(0, 2)))
    with pytest.raises(LiftError, match=r"\(--now\) runs in one process; under mlx.launch"):
        Absorbing("never-read.md")
