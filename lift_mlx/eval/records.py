"""Evaluation records on disk: append-only JSONL files that a crash leaves readable, shared by
the evaluation (records.jsonl, absorbs.jsonl) and the judge (judgements.jsonl)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LiftError


def read_jsonl(path: Path) -> list[dict]:
    """The records of a results file; a last line cut short by a crash is dropped."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    # Whatever follows the last newline was being written when the run died.
    records = []
    for lineno, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise LiftError(f"{path}, line {lineno}: not JSON; delete the line or the file "
                            "to redo those answers") from None
    return records


def record_key(r: dict) -> tuple[str, str, str]:
    """What a record answers: (document, question, arm)."""
    return r["doc_id"], r["question_id"], r["arm"]


class JsonlLog:
    """An append-only JSONL file; each record is flushed to disk as soon as it is written."""

    def __init__(self, path: Path):
        self.path = path
        if path.exists():  # cut a half-written last line so the next record starts clean
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with path.open("r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self.file = None

    def write(self, record: dict) -> None:
        if self.file is None:
            self.file = self.path.open("a", encoding="utf-8")
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
