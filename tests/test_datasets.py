import json
import re
from pathlib import Path

import pytest

from lift_mlx.errors import LiftError
from lift_mlx.eval.datasets import (
    EvalDoc,
    Question,
    load_eval_set,
    load_loogle,
    load_native,
)

SAMPLES = Path(__file__).resolve().parent.parent / "lift_mlx" / "data" / "samples"


def write_jsonl(path: Path, *records) -> Path:
    """Records are dicts (written as JSON) or raw strings (written as they are)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


LOOGLE_DOC = {"title": "Ferry", "input": "A long document.", "output": "none"}
LONGBENCH_LINE = {
    "input": "Who?",
    "context": "Some context.",
    "answers": ["Someone"],
    "all_classes": None,
    "length": 2,
    "_id": "x1",
}
NATIVE_DOC = {"id": "d1", "document": "Text.", "questions": [{"question": "Q?", "answers": ["A"]}]}


# --- shipped samples ----------------------------------------------------------------------------


def test_loogle_sample_parses_string_qa_pairs():
    raw = (SAMPLES / "loogle_sample.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line)["qa_pairs"], str) for line in raw)  # as upstream

    docs = load_eval_set(SAMPLES / "loogle_sample.jsonl")
    assert [d.id for d in docs] == [
        "The Brindlewick Ferry",
        "Notes on the Quillon Valley Weavers' Guild",
    ]
    ferry = docs[0]
    assert ferry.source == "loogle"
    assert "Maud Ellery" in ferry.document
    assert [q.id for q in ferry.questions] == [f"The Brindlewick Ferry-{i}" for i in range(3)]
    first = ferry.questions[0]
    assert first.question == "Who founded the Brindlewick Ferry?"
    assert first.answers == ["Maud Ellery"]
    assert first.meta["evidence"] == "It was founded in 1821 by Maud Ellery"
    assert ferry.questions[2].type == "comprehension & reasoning"


def test_longbench_sample_groups_questions_that_share_a_context():
    docs = load_eval_set(SAMPLES / "longbench_sample.jsonl")
    assert len(docs) == 2
    assert [len(d.questions) for d in docs] == [2, 2]
    railway = docs[0]
    assert railway.source == "longbench/musique"
    assert "Rhoswen Pugh" in railway.document
    assert [q.id for q in railway.questions] == ["lb-musique-0001", "lb-musique-0002"]
    assert railway.questions[1].answers == ["Llanfarren"]
    assert railway.questions[0].type == "musique"
    assert railway.questions[0].meta["length"] > 100
    assert docs[1].questions[1].answers == ["three", "3"]


def test_native_sample_reads_inline_and_path_documents():
    docs = load_eval_set(SAMPLES / "native_sample.jsonl")
    inline, from_file = docs
    assert inline.id == "orrin-4.2" and inline.source == "native"
    assert [q.id for q in inline.questions] == ["orrin-conflict", "orrin-4.2-1", "orrin-4.2-2"]
    assert inline.questions[0].keywords == ["conflict", "renamed"]
    assert inline.questions[2].choices[1] == "the plain-text index"
    assert inline.questions[2].answers == ["B"]
    # document_path is relative to the JSONL's folder.
    expected = (SAMPLES / "native_sample_doc.txt").read_text(encoding="utf-8")
    assert from_file.document == expected
    assert from_file.questions[0].meta == {"evidence": "paragraph 2"}


def test_every_sample_loads_with_its_explicit_format():
    for fmt in ("loogle", "longbench", "native"):
        docs = load_eval_set(SAMPLES / f"{fmt}_sample.jsonl", fmt=fmt)
        assert docs and all(isinstance(d, EvalDoc) and d.questions for d in docs)
        assert all(isinstance(q, Question) for d in docs for q in d.questions)


# --- LooGLE -------------------------------------------------------------------------------------


def test_loogle_qa_pairs_as_python_literal_with_quotes_inside(tmp_path):
    pairs = [{"Q": "What's the keeper's name?", "A": 'He is called "Tam".', "S": "..."}]
    text = repr(pairs)  # mixes quote styles; not JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    path = write_jsonl(tmp_path / "l.jsonl", {**LOOGLE_DOC, "qa_pairs": text})
    (doc,) = load_loogle(path)
    assert doc.questions[0].question == "What's the keeper's name?"
    assert doc.questions[0].answers == ['He is called "Tam".']


def test_loogle_qa_pairs_as_json_string_or_real_list(tmp_path):
    pairs = [{"Q": "Q1?", "A": "A1"}, {"Q": "Q2?", "A": ["A2", "A2b"], "type": "timeline"}]
    path = write_jsonl(
        tmp_path / "l.jsonl",
        {**LOOGLE_DOC, "qa_pairs": json.dumps(pairs)},
        {**LOOGLE_DOC, "title": "", "qa_pairs": pairs},
    )
    first, second = load_eval_set(path)
    assert [q.answers for q in first.questions] == [["A1"], ["A2", "A2b"]]
    assert first.questions[1].type == "timeline"
    # No title: the line number names the document and its questions.
    assert second.id == "2" and second.questions[0].id == "2-0"


def test_loogle_repeated_title_gets_a_unique_id(tmp_path):
    pairs = [{"Q": "Q?", "A": "A"}]
    path = write_jsonl(tmp_path / "l.jsonl", *[{**LOOGLE_DOC, "qa_pairs": pairs}] * 2)
    assert [d.id for d in load_eval_set(path)] == ["Ferry", "Ferry@2"]


def test_loogle_code_in_qa_pairs_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    # eval() would create the marker file; literal_eval must refuse the call.
    payload = f"[__import__('pathlib').Path({str(marker)!r}).touch()]"
    path = write_jsonl(tmp_path / "l.jsonl", {**LOOGLE_DOC, "qa_pairs": payload})
    with pytest.raises(LiftError, match=r"line 1: 'qa_pairs' is neither JSON nor a Python"):
        load_eval_set(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "qa_pairs, message",
    [
        ("[{'Q': 'unclosed", "neither JSON nor a Python literal"),
        ("{'Q': 'a dict, not a list', 'A': 'x'}", "must hold a list"),
        ("['just a string']", r"qa_pairs\[0\] must be a dict"),
        ([{"A": "no question"}], r"'Q' \(qa_pairs\[0\].Q, the question\)"),
        ([{"Q": "no answer?"}], r"qa_pairs\[0\].A"),
        (42, "must be a list or a string"),
    ],
)
def test_loogle_malformed_qa_pairs(tmp_path, qa_pairs, message):
    good = {**LOOGLE_DOC, "qa_pairs": [{"Q": "Q?", "A": "A"}]}
    path = write_jsonl(tmp_path / "l.jsonl", good, {**LOOGLE_DOC, "qa_pairs": qa_pairs})
    with pytest.raises(LiftError, match=rf"l\.jsonl, line 2: .*{message}"):
        load_eval_set(path)


def test_loogle_missing_document(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", {"title": "T", "qa_pairs": "[]", "input": ""})
    with pytest.raises(LiftError, match=r"line 1: 'input' \(the document\) .* it is empty"):
        load_eval_set(path, fmt="loogle")


def test_loogle_records_without_questions_are_skipped(tmp_path):
    # Upstream's summarization file says "none" where the QA files hold pairs.
    path = write_jsonl(tmp_path / "l.jsonl", {**LOOGLE_DOC, "qa_pairs": "none"})
    with pytest.raises(LiftError, match="no documents with questions"):
        load_eval_set(path)


# --- LongBench ----------------------------------------------------------------------------------


def test_longbench_empty_input_and_classes(tmp_path):
    # Summarization subsets have no question in `input`; classification ones list all_classes.
    path = write_jsonl(
        tmp_path / "lb.jsonl",
        {**LONGBENCH_LINE, "input": "", "dataset": "gov_report"},
        {**LONGBENCH_LINE, "context": "Other.", "all_classes": ["x", "y"], "_id": None},
    )
    summary, classify = load_eval_set(path)
    assert summary.questions[0].question == "" and summary.questions[0].type == "gov_report"
    assert classify.questions[0].meta == {"length": 2, "all_classes": ["x", "y"]}
    assert classify.questions[0].id == "lb-2"  # no _id: file stem and line number


@pytest.mark.parametrize(
    "change, message",
    [
        ({"answers": 3}, "'answers' must be a list of strings"),
        ({"answers": ["ok", 5]}, "'answers' must be a list of strings"),
        ({"context": ""}, r"'context' \(the document\)"),
        ({"input": None}, r"'input' \(the question\) must be a string"),
    ],
)
def test_longbench_malformed_lines(tmp_path, change, message):
    path = write_jsonl(tmp_path / "lb.jsonl", LONGBENCH_LINE, "", {**LONGBENCH_LINE, **change})
    with pytest.raises(LiftError, match=rf"lb\.jsonl, line 3: {message}"):
        load_eval_set(path, fmt="longbench")


# --- native -------------------------------------------------------------------------------------


def test_native_absolute_document_path(tmp_path):
    text_file = tmp_path / "elsewhere" / "doc.txt"
    text_file.parent.mkdir()
    text_file.write_text("Absolute.", encoding="utf-8")
    record = {**NATIVE_DOC, "document_path": str(text_file)}
    del record["document"]
    (doc,) = load_native(write_jsonl(tmp_path / "sub.jsonl", record))
    assert doc.document == "Absolute."


@pytest.mark.parametrize(
    "change, message",
    [
        ({"document_path": "missing.txt"}, "exactly one of 'document'"),
        ({"questions": []}, "'questions' must be a non-empty list"),
        ({"questions": [{"question": "Q?"}]}, "needs 'answers' or 'keywords'"),
        ({"questions": [{"question": "Q?", "answer": "A"}]}, r"unknown keys \['answer'\]"),
        ({"questions": [{"question": "Q?", "choices": ["x", "y"], "keywords": ["x"]}]}, "letter"),
        ({"questions": [{"question": "Q?", "answers": ["A"], "meta": []}]}, "meta must be"),
        ({"title": "T"}, r"unknown keys \['title'\]"),
    ],
)
def test_native_malformed_documents(tmp_path, change, message):
    path = write_jsonl(tmp_path / "n.jsonl", NATIVE_DOC | {"id": "d0"}, NATIVE_DOC | change)
    with pytest.raises(LiftError, match=rf"n\.jsonl, line 2: .*{message}"):
        load_eval_set(path)


def test_native_missing_document_path_names_the_resolved_path(tmp_path):
    record = {
        "id": "d1",
        "document_path": "texts/missing.txt",
        "questions": NATIVE_DOC["questions"],
    }
    path = write_jsonl(tmp_path / "n.jsonl", record)
    expected = re.escape(str(tmp_path / "texts" / "missing.txt"))
    with pytest.raises(LiftError, match=rf"line 1: document_path {expected} does not exist"):
        load_eval_set(path)


def test_native_duplicate_ids(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", NATIVE_DOC, NATIVE_DOC)
    with pytest.raises(LiftError, match="line 2: id 'd1' is already used on line 1"):
        load_eval_set(path)


# --- any format ---------------------------------------------------------------------------------


def test_invalid_json_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", NATIVE_DOC, "", '{"id": "d2", "document": ')
    with pytest.raises(LiftError, match=r"bad\.jsonl, line 3: not valid JSON"):
        load_eval_set(path)


def test_a_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", NATIVE_DOC, "[1, 2]")
    with pytest.raises(LiftError, match="line 2: expected a JSON object, got a list"):
        load_eval_set(path)


def test_unknown_format_and_keys(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", {"text": "?"})
    with pytest.raises(LiftError, match=r"odd\.jsonl, line 1: cannot tell the format .*'text'"):
        load_eval_set(path)
    with pytest.raises(LiftError, match="unknown eval-set format 'squad'"):
        load_eval_set(path, fmt="squad")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(LiftError, match="empty"):
        load_eval_set(empty)
    with pytest.raises(LiftError, match="no such file"):
        load_eval_set(tmp_path / "nope.jsonl")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(NATIVE_DOC).encode() + b"\n" + b'{"id": "caf\xe9"}\n')
    with pytest.raises(LiftError, match="line 2: not UTF-8"):
        load_eval_set(path)
