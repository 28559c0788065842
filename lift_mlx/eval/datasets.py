"""Evaluation sets: long documents with questions, read from LooGLE, LongBench or native JSONL.

Every loader yields `EvalDoc`s (one document, all its questions), because LIFT absorbs a
document once and then answers all of its questions with the same adapter.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LiftError

FORMATS = ("loogle", "longbench", "native")

_NATIVE_DOC_KEYS = {"id", "document", "document_path", "questions"}
_NATIVE_QUESTION_KEYS = {"id", "question", "answers", "type", "keywords", "choices", "meta"}


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]  # references for f1/em/rouge_l; for multiple choice, the correct letter
    type: str = ""  # LooGLE question type or LongBench subset name
    keywords: list[str] = field(default_factory=list)  # scored by keyword_match
    choices: list[str] = field(default_factory=list)  # scored by choice_accuracy
    meta: dict = field(default_factory=dict)


@dataclass
class EvalDoc:
    id: str
    document: str
    questions: list[Question]
    source: str = ""  # format it was read from, e.g. "loogle" or "longbench/narrativeqa"


def _bad(path: Path, lineno: int, what: str) -> LiftError:
    return LiftError(f"{path}, line {lineno}: {what}")


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    try:
        # Binary, decoded line by line, so a bad byte is reported on its own line.
        f = path.open("rb")
    except FileNotFoundError:
        raise LiftError(f"{path}: no such file; give the path of a JSONL evaluation set") from None
    except OSError as e:
        raise LiftError(f"{path}: cannot read it ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig")  # -sig: tolerate a byte-order mark
            except UnicodeDecodeError:
                raise _bad(path, lineno, "not UTF-8 text; save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise _bad(path, lineno, f"not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise _bad(path, lineno, f"expected a JSON object, got a {kind}")
            yield lineno, record


def _text(record: dict, key: str, path: Path, lineno: int, what: str) -> str:
    value = record.get(key)
    if isinstance(value, str) and value.strip():
        return value
    if key not in record:
        found = "missing"
    else:
        found = "empty" if isinstance(value, str) else f"a {type(value).__name__}"
    raise _bad(path, lineno, f"'{key}' ({what}) must be a non-empty string, it is {found}")


def _strings(value, key: str, path: Path, lineno: int) -> list[str]:
    """A list of strings; a lone string counts as a list of one."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _bad(path, lineno, f"'{key}' must be a list of strings, it is {value!r:.60}")


# --- LooGLE -----------------------------------------------------------------------------------


def _parse_qa_pairs(value, path: Path, lineno: int) -> list:
    """LooGLE's `qa_pairs`: a list, or a string holding a JSON or Python-literal list."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    if not isinstance(value, str):
        raise _bad(
            path, lineno, f"'qa_pairs' must be a list or a string, it is a {type(value).__name__}"
        )
    text = value.strip()
    if text.lower() in ("", "none", "null"):  # upstream's summarization records say "none"
        return []
    try:
        pairs = json.loads(text)
    except json.JSONDecodeError:
        # Upstream writes the list with Python's repr (single quotes). literal_eval reads
        # literals only and refuses calls and names, so a hostile file cannot run code.
        try:
            pairs = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise _bad(
                path, lineno, "'qa_pairs' is neither JSON nor a Python literal list of dicts"
            ) from None
    if not isinstance(pairs, list):
        raise _bad(path, lineno, f"'qa_pairs' must hold a list, it holds a {type(pairs).__name__}")
    return pairs


def load_loogle(path: str | Path) -> Iterator[EvalDoc]:
    """LooGLE JSONL: one document per line (`input`, `title`, `qa_pairs` with Q/A/S dicts)."""
    path = Path(path)
    seen: set[str] = set()
    for lineno, record in _records(path):
        document = _text(record, "input", path, lineno, "the document")
        if "qa_pairs" not in record:
            raise _bad(path, lineno, "no 'qa_pairs'; a LooGLE line needs input, title, qa_pairs")
        pairs = _parse_qa_pairs(record["qa_pairs"], path, lineno)
        if not pairs:
            continue  # nothing to ask; absorbing it would only cost time
        title = str(record.get("title") or "").strip()
        doc_id = title or str(lineno)
        if doc_id in seen:  # keep ids unique when a title repeats
            doc_id = f"{doc_id}@{lineno}"
        seen.add(doc_id)
        questions = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict):
                raise _bad(path, lineno, f"qa_pairs[{i}] must be a dict with Q and A")
            where = f"qa_pairs[{i}].Q"
            question = _text(pair, "Q", path, lineno, f"{where}, the question")
            answers = _strings(pair.get("A"), f"qa_pairs[{i}].A", path, lineno)
            meta = {"evidence": pair["S"]} if "S" in pair else {}
            kind = str(pair.get("type") or "")
            questions.append(Question(f"{doc_id}-{i}", question, answers, type=kind, meta=meta))
        yield EvalDoc(doc_id, document, questions, source="loogle")


# --- LongBench --------------------------------------------------------------------------------


def load_longbench(path: str | Path) -> Iterator[EvalDoc]:
    """LongBench JSONL: one question per line; lines that share a `context` become one EvalDoc."""
    path = Path(path)
    docs: dict[str, EvalDoc] = {}
    for lineno, record in _records(path):
        context = _text(record, "context", path, lineno, "the document")
        # Summarization subsets (gov_report, multi_news) leave `input` empty: the task is
        # in LongBench's prompt template, not in the line.
        question = record.get("input")
        if not isinstance(question, str):
            raise _bad(path, lineno, "'input' (the question) must be a string")
        answers = _strings(record.get("answers"), "answers", path, lineno)
        subset = str(record.get("dataset") or "")
        meta = {k: record[k] for k in ("length", "language") if record.get(k) is not None}
        if record.get("all_classes") is not None:
            meta["all_classes"] = _strings(record["all_classes"], "all_classes", path, lineno)
        qid = str(record.get("_id") or f"{path.stem}-{lineno}")
        key = hashlib.sha1(context.encode("utf-8")).hexdigest()[:16]
        if key not in docs:
            source = f"longbench/{subset}" if subset else "longbench"
            docs[key] = EvalDoc(key, context, [], source=source)
        docs[key].questions.append(Question(qid, question, answers, type=subset, meta=meta))
    yield from docs.values()


# --- native -----------------------------------------------------------------------------------


def _native_question(q, doc_id: str, i: int, path: Path, lineno: int) -> Question:
    where = f"questions[{i}]"
    if not isinstance(q, dict):
        raise _bad(path, lineno, f"{where} must be an object with 'question' and 'answers'")
    unknown = sorted(set(q) - _NATIVE_QUESTION_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_NATIVE_QUESTION_KEYS))
        raise _bad(path, lineno, f"{where} has unknown keys {unknown}; allowed: {allowed}")
    question = _text(q, "question", path, lineno, f"{where}, the question")
    answers = _strings(q.get("answers", []), f"{where}.answers", path, lineno)
    keywords = _strings(q.get("keywords", []), f"{where}.keywords", path, lineno)
    choices = _strings(q.get("choices", []), f"{where}.choices", path, lineno)
    if not answers and not keywords:
        raise _bad(path, lineno, f"{where} needs 'answers' or 'keywords' to be scored against")
    if choices and not answers:
        raise _bad(path, lineno, f"{where} has choices; give the correct letter in 'answers'")
    meta = q.get("meta", {})
    if not isinstance(meta, dict):
        raise _bad(path, lineno, f"{where}.meta must be an object")
    qid = str(q.get("id") or f"{doc_id}-{i}")
    kind = str(q.get("type") or "")
    return Question(qid, question, answers, kind, keywords, choices, dict(meta))


def _native_document(record: dict, path: Path, lineno: int) -> str:
    if ("document" in record) == ("document_path" in record):
        raise _bad(path, lineno, "give exactly one of 'document' (the text) or 'document_path'")
    if "document" in record:
        return _text(record, "document", path, lineno, "the document text")
    doc_path = Path(_text(record, "document_path", path, lineno, "a text file")).expanduser()
    if not doc_path.is_absolute():
        doc_path = path.parent / doc_path  # relative to the JSONL, not to where we run
    try:
        document = doc_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _bad(path, lineno, f"document_path {doc_path} does not exist") from None
    except UnicodeDecodeError:
        raise _bad(path, lineno, f"document_path {doc_path} is not UTF-8 text") from None
    except OSError as e:
        raise _bad(path, lineno, f"cannot read document_path {doc_path} ({e.strerror})") from None
    if not document.strip():
        raise _bad(path, lineno, f"document_path {doc_path} is empty")
    return document


def load_native(path: str | Path) -> Iterator[EvalDoc]:
    """lift-mlx's own JSONL: one document per line with `id`, `document` or `document_path`
    (relative to the JSONL's folder) and `questions`."""
    path = Path(path)
    seen: dict[str, int] = {}
    for lineno, record in _records(path):
        unknown = sorted(set(record) - _NATIVE_DOC_KEYS)
        if unknown:
            allowed = ", ".join(sorted(_NATIVE_DOC_KEYS))
            raise _bad(path, lineno, f"unknown keys {unknown}; allowed: {allowed}")
        doc_id = str(record.get("id") or lineno)
        if doc_id in seen:
            raise _bad(path, lineno, f"id {doc_id!r} is already used on line {seen[doc_id]}")
        seen[doc_id] = lineno
        document = _native_document(record, path, lineno)
        raw = record.get("questions")
        if not isinstance(raw, list) or not raw:
            raise _bad(path, lineno, "'questions' must be a non-empty list")
        questions = [_native_question(q, doc_id, i, path, lineno) for i, q in enumerate(raw)]
        yield EvalDoc(doc_id, document, questions, source="native")


# --- any format -------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[[Path], Iterator[EvalDoc]]] = {
    "loogle": load_loogle,
    "longbench": load_longbench,
    "native": load_native,
}


def detect_format(record: dict) -> str | None:
    """The format a JSONL line's keys point to, or None."""
    keys = set(record)
    if "qa_pairs" in keys:
        return "loogle"
    if "questions" in keys and keys & {"document", "document_path"}:
        return "native"
    if {"context", "input"} <= keys:
        return "longbench"
    return None


def load_eval_set(path: str | Path, fmt: str = "auto") -> list[EvalDoc]:
    """Read an evaluation set; `fmt` is loogle, longbench, native or auto (from the first line)."""
    path = Path(path)
    if fmt not in ("auto", *FORMATS):
        raise LiftError(f"unknown eval-set format {fmt!r}; use auto, {', '.join(FORMATS)}")
    if fmt == "auto":
        with closing(_records(path)) as records:
            first = next(records, None)
        if first is None:
            raise LiftError(f"{path}: the file is empty; expected one JSON object per line")
        lineno, record = first
        detected = detect_format(record)
        if detected is None:
            raise _bad(
                path,
                lineno,
                f"cannot tell the format from keys {sorted(record)}; expected LooGLE "
                "(input, title, qa_pairs), LongBench (context, input, answers) or native "
                "(id, document or document_path, questions); or pass the format",
            )
        fmt = detected
    docs = list(_LOADERS[fmt](path))
    if not docs:
        raise LiftError(f"{path}: no documents with questions found (read as {fmt})")
    return docs
