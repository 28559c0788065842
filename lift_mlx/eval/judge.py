"""A local judge for evaluation records: a model says True or False on each answer against
its references, as LooGLE's GPT-4 judge does. Verdicts go to judgements.jsonl, beside the
records, and are reported in their own column, never mixed into the offline scores."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .. import prompts
from ..answer import stream_answer
from ..errors import LiftError
from ..models import LoadedModel
from ..progress import Progress
from .records import JsonlLog, read_jsonl, record_key

JUDGE_MAX_TOKENS = 8
JUDGEMENTS_FILE = "judgements.jsonl"  # one line per judged record
# LooGLE's GPT-4 judge prompt, reworded; the verdict is the first True/False in the reply.
JUDGE_INSTRUCTION = (
    "Given a question, a ground-truth answer and a predicted answer, decide whether the "
    "predicted answer means the same as the ground truth. Reply with only True or False."
)


def judge_prompt(tokenizer, question: str, references: Sequence[str], prediction: str
                 ) -> list[int]:
    """Prompt ids asking whether `prediction` matches the references, LooGLE-style."""
    text = (f"{JUDGE_INSTRUCTION}\n\nQuestion: {question.strip()}\n"
            f"Ground truth: {' | '.join(r.strip() for r in references)}\n"
            f"Predicted answer: {prediction.strip()}")
    return prompts.chat_ids(tokenizer, prompts.encode(tokenizer, text))


def verdict_score(reply: str) -> float:
    """1.0 when the judge's first True/False is True; anything else counts as False."""
    m = re.search(r"\b(true|false)\b", reply, flags=re.IGNORECASE)
    return float(bool(m) and m.group(1).lower() == "true")


def judge_records(records: Sequence[dict], judge: LoadedModel, out: str | Path,
                  progress: Progress | None = None) -> list[dict]:
    """Have `judge` rate every answered record with references; resumable like run_eval.

    Returns the judgements of `records`, old and new. The judge must be the plain model: the
    caller resets any adapter first.
    """
    path = Path(out) / JUDGEMENTS_FILE
    log = JsonlLog(path)
    old = read_jsonl(path)
    others = {j["judge"] for j in old if j["judge_fingerprint"] != judge.fingerprint}
    if others:
        raise LiftError(f"{out} was judged by {sorted(others)[0]!r}; pass that --judge, "
                        "or another --out to judge with a second model")
    done = {record_key(j) for j in old}
    todo = [r for r in records
            if r["prediction"] is not None and r["references"] and record_key(r) not in done]
    progress = progress or Progress(quiet=True)
    try:
        with progress.bar("judge", len(todo), unit="verdicts") as update:
            for n, r in enumerate(todo, start=1):
                ids = judge_prompt(judge.tokenizer, r["question"], r["references"],
                                   r["prediction"])
                reply = "".join(stream_answer(judge.model, judge.tokenizer, ids,
                                              JUDGE_MAX_TOKENS, temp=0.0))
                log.write({"doc_id": r["doc_id"], "question_id": r["question_id"],
                           "arm": r["arm"], "judge": judge.name,
                           "judge_fingerprint": judge.fingerprint, "reply": reply,
                           "score": verdict_score(reply)})
                update(n)
    finally:
        log.close()
    keys = {record_key(r) for r in records}
    return [j for j in read_jsonl(path) if record_key(j) in keys]
