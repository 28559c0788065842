"""Checks the real documents' hand-written questions (scripts/data/real_docs/) against the rules
they are written to:

- each document is 4k-8k tokens (SmolLM2's tokenizer) and is named in SOURCES.md;
- each has at least 25 questions;
- each question's `meta.evidence` is one sentence found verbatim in the document (whitespace
  aside), and each reference answer is found verbatim in that sentence;
- a question shares at most 3 consecutive words with its evidence sentence (it is reworded);
- the evidence sentences are spread over the whole document (every quarter holds some).

    python scripts/check_real_docs.py            # all documents; exit 1 on any failure
    python scripts/check_real_docs.py NAME ...   # some of them
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lift_mlx.eval.datasets import load_native  # noqa: E402

FOLDER = HERE / "data" / "real_docs"
MIN_TOKENS, MAX_TOKENS = 4000, 8200
MIN_QUESTIONS = 25
MAX_SHARED_RUN = 3
WORD = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def squash(text: str) -> str:
    """`text` with every run of whitespace one space (evidence is matched so)."""
    return " ".join(text.split())


def longest_shared_run(a: str, b: str) -> int:
    """The most consecutive words `a` and `b` share."""
    x, y = words(a), words(b)
    best = 0
    for i in range(len(x)):
        for j in range(len(y)):
            k = 0
            while i + k < len(x) and j + k < len(y) and x[i + k] == y[j + k]:
                k += 1
            best = max(best, k)
    return best


def check(path: Path, tokenizer) -> list[str]:
    """The problems of one document's JSONL (empty: it passes)."""
    problems = []
    docs = list(load_native(path))
    if len(docs) != 1:
        return [f"{path.name}: expected one document, found {len(docs)}"]
    doc = docs[0]
    text = squash(doc.document)
    if tokenizer is not None:
        n = len(tokenizer.encode(doc.document, add_special_tokens=False))
        if not MIN_TOKENS <= n <= MAX_TOKENS:
            problems.append(f"{doc.id}: {n} tokens, outside {MIN_TOKENS}-{MAX_TOKENS}")
    if len(doc.questions) < MIN_QUESTIONS:
        problems.append(f"{doc.id}: {len(doc.questions)} questions, fewer than {MIN_QUESTIONS}")
    quarters = set()
    for q in doc.questions:
        evidence = squash(q.meta.get("evidence", ""))
        where = text.find(evidence) if evidence else -1
        if where < 0:
            problems.append(f"{doc.id}/{q.id}: evidence not found verbatim in the document")
            continue
        quarters.add(min(3, 4 * where // max(1, len(text))))
        if not any(squash(a) in evidence for a in q.answers):
            problems.append(f"{doc.id}/{q.id}: no answer is verbatim in the evidence")
        run = longest_shared_run(q.question, evidence)
        if run > MAX_SHARED_RUN:
            problems.append(f"{doc.id}/{q.id}: shares {run} consecutive words with the "
                            f"evidence (at most {MAX_SHARED_RUN})")
    if len(quarters) < 4:
        problems.append(f"{doc.id}: evidence only in quarters {sorted(quarters)} of the document")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="documents (default: all)")
    parser.add_argument("--no-tokens", action="store_true",
                        help="skip the token count (no model load)")
    args = parser.parse_args()
    paths = ([FOLDER / f"{n}.jsonl" for n in args.names] if args.names
             else sorted(FOLDER.glob("*.jsonl")))
    tokenizer = None
    if not args.no_tokens:
        from lift_mlx.models import load_model

        tokenizer = load_model("smollm2").tokenizer
    sources = (FOLDER / "SOURCES.md").read_text() if (FOLDER / "SOURCES.md").exists() else ""
    failed = False
    for path in paths:
        problems = check(path, tokenizer)
        if path.stem not in sources:
            problems.append(f"{path.stem}: not described in SOURCES.md")
        n = len(next(load_native(path)).questions) if path.exists() else 0
        print(f"{path.stem}: {'ok' if not problems else 'FAILED'} ({n} questions)")
        for p in problems:
            print(f"  {p}")
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
