"""The retrieval index kept in a store entry (retrieval/stored.py): written and checksummed with
the adapter, read instead of built again, built once and kept for entries made before it,
refused with the fix when damaged; and the bad inputs of answering with `retrieve`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FAST

from lift_mlx import library, store
from lift_mlx.absorb import absorb
from lift_mlx.absorbed import STORED_PASSAGE_LEN, load_absorbed
from lift_mlx.answer import question_prompt
from lift_mlx.cli import cli
from lift_mlx.errors import LiftError
from lift_mlx.retrieval import RETRIEVERS, passage_index
from lift_mlx.retrieval.bm25 import BM25
from lift_mlx.retrieval.stored import MANIFEST, PASSAGES
from lift_mlx.serve.model import PromptRefused, ServedModel, chat_prompt

TEXT = ("The harbour has two piers. The north pier was built in 1822 by Ada Korrin. "
        "Fishing boats land cod and herring there every morning. "
        "The lighthouse on Kestrel Point has 142 steps. A ticket to climb it costs four pounds. "
        "The museum keeps the old lamp and a logbook of storms. ") * 3
QUESTIONS = ["How many steps does the lighthouse have?", "Who built the north pier?",
             "What do the fishing boats land?", "What does the museum keep?"]
QUICK = dict(tasks=("recite",), seg_len=64, stride=32, context_len=16, rank=2, epochs=1,
             grad_checkpoint=False)
INDEX = f"{store.INDEX_DIR}/"


class CountingBM25(BM25):
    """bm25, counting the indexes it builds and those it loads from an entry."""

    def __init__(self):
        self.built = self.loaded = 0

    def index(self, passages):
        self.built += 1
        return super().index(passages)

    def load(self, folder):
        self.loaded += 1
        return super().load(folder)


@pytest.fixture
def counting(monkeypatch) -> CountingBM25:
    retriever = CountingBM25()
    monkeypatch.setitem(RETRIEVERS, "bm25", retriever)
    return retriever


def _absorbed(tiny_lm, tmp_path, text=TEXT, **settings):
    doc = tmp_path / "harbour.md"
    doc.write_text(text)
    return absorb(doc, tiny_lm, **(settings or QUICK))


def _as_before_the_index(path: Path) -> None:
    """Make the entry at `path` one written before entries kept their index."""
    shutil.rmtree(path / store.INDEX_DIR)
    meta = json.loads((path / store.META_FILE).read_text())
    meta["checksums"] = {n: d for n, d in meta["checksums"].items() if not n.startswith(INDEX)}
    (path / store.META_FILE).write_text(json.dumps(meta, indent=2))


def _held(absorbed, question: str, **changes) -> list:
    """The passages retrieved for `question` (asked of the adapter, whatever it is about)."""
    return absorbed.sources(question, retrieve=True, route=False, **changes)


def _files(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}


def _rewrite(path: Path, name: str, data: bytes) -> None:
    """Write `data` at the entry's file `name` with a matching checksum, as a lift-mlx that
    wrote it so would have."""
    (path / name).write_bytes(data)
    meta = json.loads((path / store.META_FILE).read_text())
    meta["checksums"][name] = store.file_sha256(path / name)
    (path / store.META_FILE).write_text(json.dumps(meta, indent=2))


def test_an_absorb_stores_the_index_with_its_checksums(tiny_lm, tmp_path, counting):
    absorbed = _absorbed(tiny_lm, tmp_path)
    path = absorbed.adapter_path
    files = store.index_files(path)
    assert {f"{INDEX}{MANIFEST}", f"{INDEX}{PASSAGES}", f"{INDEX}bm25/params.index.json",
            f"{INDEX}bm25/vocab.index.json", f"{INDEX}bm25/data.csc.index.npy"} <= set(files)
    meta = store.verify(path)
    assert {n: meta["checksums"][n] for n in files} == {n: store.file_sha256(path / n)
                                                        for n in files}
    manifest = json.loads((path / INDEX / MANIFEST).read_text())
    fresh = passage_index(tiny_lm.tokenizer, absorbed.document_text, STORED_PASSAGE_LEN)
    assert manifest["passage_len"] == STORED_PASSAGE_LEN == 48
    assert manifest["retriever"] == "bm25" and manifest["passages"] == len(fresh.passages) > 2
    assert "index" in absorbed.report.seconds
    assert counting.built == 2  # the absorb's and `fresh`
    assert _held(absorbed, QUESTIONS[0])  # the absorb's own, not built again
    assert counting.built == 2 and counting.loaded == 0


def test_a_loaded_entry_reads_its_index_and_ranks_as_a_fresh_one(tiny_lm, tmp_path, counting):
    absorbed = _absorbed(tiny_lm, tmp_path)
    loaded = load_absorbed(absorbed.adapter_path, tiny_lm)
    held = {q: _held(loaded, q) for q in QUESTIONS}
    assert counting.built == 1 and counting.loaded == 1  # the absorb's only; read once
    assert any("142 steps" in p.text for p in held[QUESTIONS[0]])
    stored = loaded._indexes[STORED_PASSAGE_LEN]
    fresh = passage_index(tiny_lm.tokenizer, absorbed.document_text, STORED_PASSAGE_LEN)
    assert stored.passages == fresh.passages  # ranges, texts and tokens
    for q in [*QUESTIONS, "lamp ticket herring", "Xylophone quartz?"]:
        assert stored.ranked(q) == fresh.ranked(q)
        assert loaded.prompt(q, retrieve=True) == absorbed.prompt(q, retrieve=True)


def test_an_entry_without_an_index_builds_it_once_and_keeps_it(tiny_lm, tmp_path, counting):
    absorbed = _absorbed(tiny_lm, tmp_path)
    path = absorbed.adapter_path
    _as_before_the_index(path)
    before = json.loads((path / store.META_FILE).read_text())
    loaded = load_absorbed(path, tiny_lm)
    built = counting.built
    held = _held(loaded, QUESTIONS[1])
    assert held and any("Ada Korrin" in p.text for p in held)
    assert counting.built == built + 1
    meta = store.verify(path)  # kept, with the checksums of its files
    assert store.index_files(path) and meta["checksums"] == store.checksums(path)
    assert {k: v for k, v in meta.items() if k != "checksums"} == {
        k: v for k, v in before.items() if k != "checksums"}
    again = load_absorbed(path, tiny_lm)
    assert _held(again, QUESTIONS[1]) == held
    assert counting.built == built + 1 and counting.loaded == 1  # read, not built
    # Another passage length is built for the question, and the entry keeps the default's.
    assert _held(again, QUESTIONS[1], passage_len=12)
    assert counting.built == built + 2
    assert json.loads((path / INDEX / MANIFEST).read_text())["passage_len"] == 48


def test_an_index_is_built_in_memory_where_the_entry_is_busy_and_again_when_outdated(
        tiny_lm, tmp_path, counting):
    absorbed = _absorbed(tiny_lm, tmp_path)
    path = absorbed.adapter_path
    _as_before_the_index(path)
    before = _files(path)
    with store.lock(absorbed.meta["key"]):  # another process absorbs it again meanwhile
        held = _held(load_absorbed(path, tiny_lm), QUESTIONS[0])
    assert held and _files(path) == before  # answered, nothing written
    with store.lock("library"):  # another process renames a document meanwhile
        assert _held(load_absorbed(path, tiny_lm), QUESTIONS[0]) == held
    assert _files(path) == before

    _held(load_absorbed(path, tiny_lm), QUESTIONS[0])  # kept now
    manifest = json.loads((path / INDEX / MANIFEST).read_text())
    _rewrite(path, f"{INDEX}{MANIFEST}", json.dumps({**manifest, "version": "bm25s 0.0.1"}
                                                    ).encode())  # an older library's index
    built = counting.built
    assert _held(load_absorbed(path, tiny_lm), QUESTIONS[0]) == held
    assert counting.built == built + 1  # built again and replaced
    assert json.loads((path / INDEX / MANIFEST).read_text()) == manifest
    assert store.verify(path)["checksums"] == store.checksums(path)


@pytest.mark.parametrize("damage, reason", [
    ("flip", f"{INDEX}{PASSAGES} does not match its checksum"),
    ("delete", f"{INDEX}bm25/vocab.index.json missing"),
    ("garble", f"{INDEX} is unreadable"),
])
def test_a_damaged_index_is_refused_with_the_fix_and_changes_nothing(tiny_lm, tmp_path, damage,
                                                                     reason, tiny_model_path):
    absorbed = _absorbed(tiny_lm, tmp_path)
    path, key = absorbed.adapter_path, absorbed.adapter_path.name
    early = load_absorbed(path, tiny_lm)  # loaded whole; its index not read yet
    if damage == "flip":
        data = bytearray((path / INDEX / PASSAGES).read_bytes())
        data[-30] ^= 0xFF
        (path / INDEX / PASSAGES).write_bytes(bytes(data))
    elif damage == "delete":
        (path / INDEX / "bm25/vocab.index.json").unlink()
    else:  # checksums that match a manifest that is not JSON
        _rewrite(path, f"{INDEX}{MANIFEST}", b'{"format": ')
    damaged = _files(path)
    fix = f"remove it with `lift-mlx docs rm {key}` and absorb the document again"
    with pytest.raises(store.Damaged, match=rf"the stored document {key} is damaged \("
                                            rf"{reason}.*\); {fix}"):
        _held(early, QUESTIONS[0])
    with pytest.raises(store.Damaged, match=rf"{reason}.*\); {fix}"):
        _held(load_absorbed(path, tiny_lm), QUESTIONS[0])
    r = CliRunner().invoke(cli, ["ask", str(path), QUESTIONS[0], "--retrieve",
                                 "--max-tokens", "4", "--model", str(tiny_model_path)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"Error: the stored document {key} is damaged ({reason}")
    assert line.endswith(fix)
    assert _files(path) == damaged  # refused, not repaired behind the user's back


def test_retrieve_refuses_an_empty_question_and_falls_back_to_the_view(tiny_lm, tmp_path,
                                                                       demo_text, counting):
    """The empty question is refused before any index is read or built; a question that
    shares no term with the document gets the head+tail view, as without `retrieve`."""
    absorbed = _absorbed(tiny_lm, tmp_path, demo_text, tasks=("recite",), **FAST)
    path, tok = absorbed.adapter_path, tiny_lm.tokenizer
    _as_before_the_index(path)
    before, built = _files(path), counting.built
    loaded = load_absorbed(path, tiny_lm)
    for question in ("", "  \n"):
        with pytest.raises(LiftError, match="the question is empty; ask something about"):
            loaded.prompt(question, retrieve=True)
    assert counting.built == built and _files(path) == before  # nothing built, nothing written

    question = "Xylophone quartz?"
    assert _held(loaded, question) == []
    ids = loaded.prompt(question, retrieve=True)
    doc_tokens = loaded.doc_tokens
    assert len(doc_tokens) > tiny_lm.window  # so the view is the head and tail, not all of it
    assert ids == loaded.prompt(question) == question_prompt(tok, question, doc_tokens,
                                                             tiny_lm.window, 256)
    assert len(ids) < tiny_lm.window


@pytest.mark.parametrize("text, indexed", [("It is. It is.", False),  # stop words alone
                                           ("Hello.", True)])  # one passage of one word
def test_a_document_too_short_to_cut_is_absorbed_and_answered(tiny_lm, tmp_path, text,
                                                              indexed):
    """One passage, with or without a word to index: stored as it is; a question it does not
    match gets the view."""
    absorbed = _absorbed(tiny_lm, tmp_path, text)
    path = absorbed.adapter_path
    manifest = json.loads((path / INDEX / MANIFEST).read_text())
    assert manifest["passages"] == 1 and manifest["indexed"] is indexed
    assert (path / INDEX / "bm25").is_dir() is indexed
    loaded = load_absorbed(path, tiny_lm)
    for question in ("What is it?", "Hello?", "Xylophone quartz?"):
        held = _held(loaded, question)
        found = indexed and question == "Hello?"
        assert held == ([loaded._indexes[STORED_PASSAGE_LEN].passages[0]] if found else [])
        if not found:  # the view: here the whole document
            assert loaded.prompt(question, retrieve=True) == loaded.prompt(question)
        assert isinstance(loaded.ask(question, retrieve=True, max_tokens=2), str)


def test_the_server_reads_the_index_an_entry_keeps_or_keeps_the_one_it_builds(tiny_lm,
                                                                             tmp_path, counting):
    absorbed = _absorbed(tiny_lm, tmp_path)
    path = absorbed.adapter_path
    _as_before_the_index(path)
    served = ServedModel(tiny_lm)
    try:
        adapter = served.run(served.adapter, library.find(path.name))
        built = counting.built
        with pytest.raises(PromptRefused, match="the question"):
            chat_prompt(served, [{"role": "user", "content": " "}], adapter, context=True,
                        max_tokens=8, retrieve=True)
        assert counting.built == built and not store.index_files(path)  # before any index
        messages = [{"role": "user", "content": QUESTIONS[1]}]
        prompt, held = chat_prompt(served, messages, adapter, context=True, max_tokens=8,
                                   retrieve=True)
        assert held == _held(absorbed, QUESTIONS[1]) and counting.built == built + 1
        assert store.verify(path)["checksums"] == store.checksums(path)  # kept in the entry
        served.forget(path.name)  # as a restarted server: read from the entry
        adapter = served.run(served.adapter, library.find(path.name))
        assert chat_prompt(served, messages, adapter, context=True, max_tokens=8,
                           retrieve=True) == (prompt, held)
        assert counting.built == built + 1 and counting.loaded == 1
    finally:
        served.close()
