"""The document library (`lift-mlx docs`) and the store's integrity: names, export/import
checked against the base model, checksums, entries of other versions, the absorb lock across
processes (and its recovery after a kill), and absorbs stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mlx.core as mx
import pytest
from click.testing import CliRunner
from conftest import FAST

from lift_mlx import library, store
from lift_mlx.absorb import absorb
from lift_mlx.absorbed import load_absorbed
from lift_mlx.cli import cli
from lift_mlx.errors import LiftError

RECITE = dict(tasks=("recite",), **FAST)
FAST_ARGS = ["--seg-len", "128", "--stride", "64", "--context-len", "32", "--rank", "4",
             "--no-grad-checkpoint", "--qa-per-sentence", "1"]


@pytest.fixture
def runner():
    return CliRunner()


def _doc(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


def test_list_names_each_document_and_shows_every_field(runner, tiny_lm, tmp_path, demo_text,
                                                        tiny_model_path):
    first = absorb(_doc(tmp_path / "a", "Charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    second = absorb(_doc(tmp_path / "b", "Charter.md", demo_text[1500:3000]), tiny_lm, **RECITE)
    r = runner.invoke(cli, ["docs", "list"])
    assert r.exit_code == 0, r.output
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["NAME", "SOURCE", "SHA256", "BASE", "MODEL", "SETTINGS", "SIZE",
                              "CREATED", "ABSORB"]
    assert [row.split()[0] for row in rows] == ["charter", "charter-2"]  # oldest first
    for row, absorbed in zip(rows, (first, second)):
        meta = absorbed.meta
        for shown in (meta["document"]["source"], meta["document"]["sha256"][:12],
                      str(tiny_model_path), "rank 4, 1 epoch, recite", " MB",
                      meta["created"][:10]):
            assert shown in row, (shown, row)
        assert row.rstrip().endswith("s")  # the absorb time
    stored = json.loads((first.adapter_path / store.META_FILE).read_text())
    assert stored["name"] == "charter"  # names are kept in the metadata, not recomputed
    assert store.verify(first.adapter_path)["checksums"] == store.checksums(first.adapter_path)


def test_an_entry_stored_before_runs_were_counted_lists_and_loads(runner, tiny_lm, tmp_path,
                                                                 demo_text):
    """Its report has no runs or total_seconds: the absorb time is its stages', one run."""
    absorbed = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    meta_file = absorbed.adapter_path / store.META_FILE
    meta = json.loads(meta_file.read_text())
    assert meta["report"].pop("runs") == 1
    total = meta["report"].pop("total_seconds")
    stages = sum(v for k, v in meta["report"]["seconds"].items() if k != "load")
    assert total == pytest.approx(stages)
    meta_file.write_text(json.dumps(meta))
    (row,) = runner.invoke(cli, ["docs", "list"]).stdout.splitlines()[1:]
    assert row.endswith(f"  {stages:.1f}s"), row
    info = runner.invoke(cli, ["info", "charter"])
    assert info.exit_code == 0 and f"absorbed in {stages:.1f}s\n" in info.stdout
    assert "runs" not in info.stdout
    again = load_absorbed(absorbed.adapter_path, tiny_lm)
    assert again.ask("Who owns the lighthouse?", max_tokens=4) == \
        absorbed.ask("Who owns the lighthouse?", max_tokens=4)


def test_ask_chat_and_info_take_a_document_by_its_library_name(runner, tiny_lm, tmp_path,
                                                               demo_text, monkeypatch):
    absorbed = absorb(_doc(tmp_path / "docs", "charter.md", demo_text[:1500]), tiny_lm,
                      **RECITE)
    expected = absorbed.ask("Who owns the lighthouse?", max_tokens=4)
    monkeypatch.chdir(tmp_path)  # no file called charter here
    r = runner.invoke(cli, ["ask", "charter", "Who owns the lighthouse?", "--max-tokens", "4"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == expected.strip()
    key = absorbed.adapter_path.name
    r = runner.invoke(cli, ["info", key[:6]])  # a key's start names it too
    assert r.exit_code == 0 and f"adapter      {absorbed.adapter_path}" in r.stdout
    r = runner.invoke(cli, ["chat", "charter", "--max-tokens", "4"], input="Who?\n\n")
    assert r.exit_code == 0, r.output
    # a file and a library name alike: the file, and a line that says so
    (tmp_path / "charter").write_text(demo_text[:1500])
    r = runner.invoke(cli, ["ask", "charter", "Who?", "--max-tokens", "4", *FAST_ARGS,
                            "--tasks", "recite", "--model", absorbed.meta["model"]["name"]])
    assert r.exit_code == 0, r.output
    assert "is a file here and the name of a document in the library; using the file" in r.stderr
    r = runner.invoke(cli, ["ask", "nothing-called-this", "Who?"])
    assert r.exit_code == 1 and "nothing-called-this" in r.stderr  # read as a missing file


def test_show_rename_and_remove(runner, tiny_lm, tmp_path, demo_text):
    absorbed = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    key = absorbed.adapter_path.name
    r = runner.invoke(cli, ["docs", "show", key[:6]])  # a key prefix identifies it too
    assert r.exit_code == 0, r.output
    for line in ("name         charter", f"key          {key}", "integrity    ok",
                 "base model", "sha256", "rank=4"):
        assert line in r.stdout, line
    assert runner.invoke(cli, ["docs", "rename", "charter", "board-rules"]).exit_code == 0
    assert library.find("board-rules").key == key
    for bad, message in (("../x", "not a usable name"), ("Board Rules", "not a usable name"),
                         (key, "not a usable name")):
        r = runner.invoke(cli, ["docs", "rename", "board-rules", bad])
        assert r.exit_code == 1 and len(_lines(r)) == 1 and message in r.stderr, r.output
    r = runner.invoke(cli, ["docs", "show", "charter"])
    assert r.exit_code == 1 and "no document 'charter'" in r.stderr and "board-rules" in r.stderr
    r = runner.invoke(cli, ["docs", "rm", "board-rules"])
    assert r.exit_code == 0 and f"removed board-rules ({key})" in r.stdout
    assert library.entries() == [] and not absorbed.adapter_path.exists()
    assert not [p for p in store.adapters_dir().iterdir()]  # nothing left aside


def test_a_name_never_takes_another_entry_key(runner, tiny_lm, tmp_path, demo_text):
    """`find` takes a name before a key: a name that is (the start of) another entry's key
    would make `docs rm KEY` remove the wrong document."""
    first = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    second = absorb(_doc(tmp_path, "bylaws.md", demo_text[1500:3000]), tiny_lm, **RECITE)
    key = second.adapter_path.name
    for bad in (key, key[:8], key[:library.KEY_PREFIX_MIN]):
        r = runner.invoke(cli, ["docs", "rename", "charter", bad])
        assert r.exit_code == 1 and len(_lines(r)) == 1, r.output
        assert "not a usable name" in r.stderr or "start of the key of 'bylaws'" in r.stderr
    assert library.name_problem(key[:library.KEY_PREFIX_MIN - 1], library.entries()) is None
    r = runner.invoke(cli, ["docs", "rm", key[:8]])
    assert r.exit_code == 0 and f"removed bylaws ({key})" in r.stdout
    assert [e.key for e in library.entries()] == [first.adapter_path.name]


def test_export_then_import_on_the_same_base_gives_the_same_adapter(runner, tiny_lm, tmp_path,
                                                                    demo_text, tiny_model_path):
    absorbed = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    prompt = mx.array([absorbed.prompt("Who was the first chair?")])
    before = absorbed.lm.model(prompt)
    (tmp_path / "out").mkdir()
    r = runner.invoke(cli, ["docs", "export", "charter", str(tmp_path / "out")])  # into it
    assert r.exit_code == 0, r.output
    archive = tmp_path / "out" / "charter.lift.zip"
    assert sorted(zipfile.ZipFile(archive).namelist()) == sorted(library.ARCHIVE_MEMBERS)
    assert archive.stat().st_size < store.dir_size(absorbed.adapter_path) + 4096  # no base
    assert runner.invoke(cli, ["docs", "rm", "charter"]).exit_code == 0

    r = runner.invoke(cli, ["docs", "import", str(archive), "--model", str(tiny_model_path),
                            "--name", "imported"])
    assert r.exit_code == 0, r.output
    entry = library.find("imported")
    assert entry.key == absorbed.adapter_path.name and entry.meta["imported"]["from"]
    again = load_absorbed(entry.path, tiny_lm)
    assert mx.allclose(again.lm.model(prompt), before, atol=1e-6).item()
    # The retrieval index stays behind: built from the document when first asked, and kept.
    assert store.index_files(entry.path) == []
    held = absorbed.sources("Who was the first chair?", retrieve=True, route=False)
    assert held and again.sources("Who was the first chair?", retrieve=True, route=False) == held
    assert store.index_files(entry.path) and store.verify(entry.path)["checksums"] == \
        store.checksums(entry.path)
    r = runner.invoke(cli, ["docs", "import", str(archive), "--model", str(tiny_model_path)])
    assert r.exit_code == 0 and "already in the library as imported" in r.stdout


def test_import_refuses_another_base_and_damaged_or_foreign_archives(runner, tiny_lm, tmp_path,
                                                                     demo_text,
                                                                     other_model_path):
    absorbed = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    archive = library.export("charter", tmp_path / "charter.lift.zip")
    library.remove("charter")

    def rewrite(name: str, change) -> Path:
        out = tmp_path / name
        with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
            for member in src.namelist():
                data = change(member, src.read(member))
                if data is not None:
                    dst.writestr(member, data)
        return out

    def flip(member, data):
        if member == store.ADAPTER_FILE:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data

    def newer(member, data):
        if member == store.META_FILE:
            meta = json.loads(data)
            data = json.dumps({**meta, "format": 99, "lift_mlx_version": "9.0"})
        return data

    (tmp_path / "notes.zip").write_text("not a zip")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../../evil.txt", "x")
    cases = [
        (archive, ["--model", str(other_model_path)], "was made for base model"),
        (rewrite("flipped.zip", flip), [], "do not match their checksums"),
        (rewrite("newer.zip", newer), [], "store format 99"),
        (rewrite("short.zip", lambda m, d: None if m == store.DOCUMENT_FILE else d), [],
         "should hold exactly"),
        (tmp_path / "evil.zip", [], "should hold exactly"),
        (tmp_path / "notes.zip", [], "not a zip archive"),
        (tmp_path / "missing.zip", [], "No such file"),
    ]
    for path, args, message in cases:
        r = runner.invoke(cli, ["docs", "import", str(path), *args])
        assert r.exit_code == 1 and len(_lines(r)) == 1 and message in r.stderr, (path, r.output)
    assert library.entries() == []
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not [p.name for p in store.adapters_dir().iterdir()]  # no partial entry left
    assert absorbed.meta["model"]["fingerprint"] == tiny_lm.fingerprint


def test_a_damaged_entry_is_reported_with_the_fix_and_never_loaded(runner, tiny_lm, tmp_path,
                                                                   demo_text):
    doc = _doc(tmp_path, "charter.md", demo_text[:1500])
    absorbed = absorb(doc, tiny_lm, **RECITE)
    weights = absorbed.adapter_path / store.ADAPTER_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the weights
    weights.write_bytes(bytes(data))
    key = absorbed.adapter_path.name
    with pytest.raises(LiftError, match=rf"damaged \({store.ADAPTER_FILE} does not match its "
                                        rf"checksum\); remove it with `lift-mlx docs rm {key}`"):
        load_absorbed(absorbed.adapter_path, tiny_lm)
    r = runner.invoke(cli, ["docs", "show", "charter"])
    assert "integrity    cannot be used" in r.stdout and "does not match" in r.stdout
    r = runner.invoke(cli, ["ask", str(absorbed.adapter_path), "Who?", "--max-tokens", "4"])
    assert r.exit_code == 1 and len(_lines(r)) == 1 and "damaged" in r.stderr
    # Asking about the document itself trains it again and replaces the damaged entry.
    again = absorb(doc, tiny_lm, **RECITE)
    assert not again.report.reused and again.adapter_path == absorbed.adapter_path
    assert store.verify(again.adapter_path) and library.find(key).name == "charter"

    (again.adapter_path / store.META_FILE).write_text('{"key": ')  # a torn metadata file
    r = runner.invoke(cli, ["docs", "list"])
    assert r.exit_code == 0 and key in r.stdout
    assert f"cannot use {key}: damaged ({store.META_FILE} is missing or unreadable); remove it "\
        f"with `lift-mlx docs rm {key}`" in r.stderr
    with pytest.raises(LiftError, match="lift_meta.json is unreadable"):
        load_absorbed(again.adapter_path, tiny_lm)
    assert runner.invoke(cli, ["docs", "rm", key]).exit_code == 0
    assert library.entries() == []


def test_entries_of_other_versions_are_read_or_refused_with_a_clear_message(tiny_lm, tmp_path,
                                                                            demo_text, runner):
    absorbed = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    path, meta = absorbed.adapter_path, dict(absorbed.meta)
    older = {k: v for k, v in meta.items() if k not in ("format", "checksums")}
    (path / store.META_FILE).write_text(json.dumps(older))  # as lift-mlx wrote before checksums
    assert load_absorbed(path, tiny_lm).ask("Who?", max_tokens=4) == absorbed.ask(
        "Who?", max_tokens=4)
    assert "not checked (written before" in runner.invoke(cli, ["docs", "show", path.name]).stdout
    (path / store.META_FILE).write_text(json.dumps({**meta, "format": 2,
                                                    "lift_mlx_version": "0.9.0"}))
    with pytest.raises(LiftError, match=r"written by lift-mlx 0.9.0 in store format 2; this is "
                                        r"lift-mlx .*reads format 1: upgrade lift-mlx"):
        load_absorbed(path, tiny_lm)
    assert "store format 2" in runner.invoke(cli, ["docs", "list"]).stderr


def test_an_entry_of_the_checksummed_format_without_its_checksums_is_damaged(
        tiny_lm, tmp_path, demo_text, runner):
    """Removing `checksums` let a truncated adapter load unchecked (a traceback): only entries
    without a format, from before checksums, load unchecked."""
    absorbed = absorb(_doc(tmp_path, "charter.md", demo_text[:1500]), tiny_lm, **RECITE)
    path, meta = absorbed.adapter_path, dict(absorbed.meta)
    (path / store.META_FILE).write_text(json.dumps({k: v for k, v in meta.items()
                                                    if k != "checksums"}))
    weights = path / store.ADAPTER_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    message = "lift_meta.json lacks the checksums of its files"
    with pytest.raises(store.Damaged, match=message):
        load_absorbed(path, tiny_lm)
    r = runner.invoke(cli, ["ask", str(path), "Who?", "--max-tokens", "4"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert r.stderr.strip().splitlines() == [f"Error: {store.damaged(path, message)}"]
    (path / store.META_FILE).write_text(json.dumps({**meta, "checksums": {
        store.ADAPTER_FILE: meta["checksums"][store.ADAPTER_FILE]}}))  # some, not all
    with pytest.raises(store.Damaged, match=message):
        store.verify(path)


def test_an_absorb_clears_what_absorbs_killed_while_saving_left(tiny_lm, tmp_path, demo_text,
                                                                runner, tiny_model_path):
    """A SIGKILL during save left adapters/.KEY.*.partial until the next `serve`: an absorb
    clears them too, but not one whose absorb still holds its key's lock."""
    root = store.adapters_dir()
    killed = root / ".0123456789abcdef0123.x1y2.partial"
    running = root / ".fedcba9876543210fedc.z3w4.partial"
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / store.ADAPTER_FILE).write_bytes(b"half")
    with store.lock("fedcba9876543210fedc"):
        r = runner.invoke(cli, ["absorb", str(_doc(tmp_path, "charter.md", demo_text[:1500])),
                                "--model", str(tiny_model_path), "--tasks", "recite",
                                *FAST_ARGS, "--quiet"])
    assert r.exit_code == 0, r.output
    assert not killed.exists() and running.is_dir()


def test_partial_directories_are_cleaned_unless_their_absorb_is_running(tmp_path):
    root = store.adapters_dir()
    left = root / ".0123456789abcdef0123.x1y2.partial"
    running = root / ".fedcba98765432100123.z9.partial"
    left.mkdir(parents=True)
    running.mkdir()
    with store.lock("fedcba98765432100123"):
        assert store.clean_partials() == [left]
    assert not left.exists() and running.exists()


_HOLD_LOCK = """
import sys, time
from lift_mlx import store
with store.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_lock_left_by_a_killed_process_is_recovered():
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, "somekey"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        heard = []
        with pytest.raises(LiftError, match="still working on somekey"):
            with store.lock("somekey", timeout=0.3, on_wait=heard.append):
                pass
        assert heard == [f"pid {holder.pid} since " + heard[0].split(" since ")[1]]
    finally:
        holder.kill()
        holder.wait(10)
    start = time.monotonic()
    with store.lock("somekey", timeout=5):
        waited = time.monotonic() - start
    assert waited < 1.0
    assert (store.locks_dir() / "somekey.lock").exists()  # the file stays; the lock does not


def _absorb_process(doc: Path, model: Path, *extra: str) -> subprocess.Popen:
    # Ctrl-C as at a terminal: a test run started in the background inherits SIGINT ignored,
    # and Python then never turns it into KeyboardInterrupt.
    return subprocess.Popen([sys.executable, "-m", "lift_mlx.cli", "absorb", str(doc), "--model",
                             str(model), *FAST_ARGS, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_two_processes_absorbing_one_document_train_it_once(tmp_path, demo_text,
                                                            tiny_model_path):
    doc = _doc(tmp_path, "charter.md", demo_text[:3000])
    procs = [_absorb_process(doc, tiny_model_path, "--tasks", "recite", "--epochs", "12")
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]  # the same adapter path
    trained = [err for _, err in outs if "final loss" in err]
    reused = [err for _, err in outs if "stored; no training needed" in err]
    assert len(trained) == 1 and len(reused) == 1, outs
    assert "Waiting for another absorb of this document to finish (pid " in reused[0]
    assert len(store.entry_dirs()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_absorb_stops_leaves_no_entry_and_reruns_from_the_cached_qa_pairs(
        sig, tmp_path, demo_text, tiny_model_path, isolated_store):
    doc = _doc(tmp_path, "charter.md", demo_text[:1200])
    args = ["--tasks", "recite,qa", "--generator-style", "lines"]
    proc = _absorb_process(doc, tiny_model_path, *args, "--epochs", "400")
    cache = isolated_store / "qa-cache"
    deadline = time.monotonic() + 60
    def complete() -> list[Path]:  # not the pairs kept while generation is under way
        return [p for p in cache.glob("*.json") if not p.name.endswith(".partial.json")]

    while not (cache.is_dir() and complete()):  # the QA pairs are written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # well into training now
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    stopped = time.monotonic() - sent
    print(f"{sig.name}: stopped {stopped:.2f}s after the signal, exit {proc.returncode}; "
          f"said: {err.strip().splitlines()[-3:]}")
    assert proc.returncode == 130 and stopped < 5.0, err
    assert "interrupted after ingest" in err and "no adapter was stored" in err
    assert "QA pairs are cached; the same command again reuses them" in err
    assert out == "" and store.entry_dirs() == []
    assert not store.adapters_dir().exists() or not list(store.adapters_dir().iterdir())

    proc = _absorb_process(doc, tiny_model_path, *args, "--epochs", "1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "cached QA pairs" in err and "(cached)" in err  # no generation this time
    meta = store.verify(Path(out.strip()))
    assert meta["report"]["synth"]["cached"] and meta["report"]["synth"]["requests"] == 0


def _sigterm_caught(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (its SigCgt mask, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_sigterm_at_the_start_of_a_command_says_so_and_exits_130(tiny_model_path):
    """SIGTERM before absorb's own handler (here: while the document is read from stdin)
    ended the command at once with -15 and no word; it now stops it as Ctrl-C does."""
    proc = subprocess.Popen([sys.executable, "-m", "lift_mlx.cli", "absorb", "-", "--model",
                             str(tiny_model_path), *FAST_ARGS], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _sigterm_caught(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip() == "interrupted; adapters are stored only once complete" and out == ""


@pytest.mark.parametrize("command", [["docs"], ["docs", "list"], ["docs", "export"],
                                     ["docs", "import"], ["serve"]])
def test_help_is_a_manual(runner, command):
    r = runner.invoke(cli, [*command, "--help"])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) > 5, r.output
