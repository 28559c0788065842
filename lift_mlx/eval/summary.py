"""The summary of an evaluation: per arm and question type, the answered and skipped counts,
mean seconds, the mean of each offline metric and the judge's mean verdict; and its table."""

from __future__ import annotations

from collections.abc import Sequence

from .arms import ARMS
from .records import record_key

SUMMARY_FILE = "summary.json"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _row(records: list[dict], verdicts: dict) -> dict:
    answered = [r for r in records if r["prediction"] is not None]
    metrics: dict[str, list[float]] = {}
    for r in answered:
        for name, value in r["scores"].items():
            metrics.setdefault(name, []).append(value)
    row = {"count": len(answered), "skipped": len(records) - len(answered),
           "seconds": _mean([r["seconds"] for r in answered]) if answered else None,
           "scores": {name: _mean(v) for name, v in metrics.items()},
           "counts": {name: len(v) for name, v in metrics.items()}}
    judged = [verdicts[k] for k in map(record_key, answered) if k in verdicts]
    if judged:  # kept apart from "scores": a judge's verdict is not an offline metric
        row["judge"] = _mean(judged)
        row["judged"] = len(judged)
    return row


def summarize(records: Sequence[dict], judgements: Sequence[dict] = ()) -> dict:
    """{arm: {question type: row, "all": row}}; a row holds the answered count, the skipped
    count, mean seconds, the mean of each metric over the questions it applies to, and the
    judge's mean verdict when there is one."""
    verdicts = {record_key(j): j["score"] for j in judgements}
    summary: dict[str, dict] = {}
    for arm in [a for a in ARMS if any(r["arm"] == a for r in records)]:
        mine = [r for r in records if r["arm"] == arm]
        types = sorted({r["type"] or "untyped" for r in mine})
        summary[arm] = {t: _row([r for r in mine if (r["type"] or "untyped") == t], verdicts)
                        for t in types}
        summary[arm]["all"] = _row(mine, verdicts)
    return summary


_SHORT = {"keyword_match": "keyword"}  # table headers fit 8 columns


def format_summary(summary: dict) -> str:
    """The summary as a text table: scores in %, one row per arm and question type, and an
    "all" row for arms with several types."""
    rows = [(arm, t, row) for arm, by_type in summary.items() for t, row in by_type.items()
            if t != "all" or len(by_type) > 2]
    metrics = [m for m in ("f1", "em", "contains", "rouge_l", "keyword_match", "accuracy")
               if any(m in row["scores"] for _, _, row in rows)]
    judge = any("judge" in row for _, _, row in rows)
    type_width = max([len("type")] + [len(t) for _, t, _ in rows])
    head = f"{'arm':<10} {'type':<{type_width}} {'n':>4} {'skip':>4}"
    head += "".join(f" {_SHORT.get(m, m):>8}" for m in metrics)
    head += (f" {'judge':>6}" if judge else "") + "  s/answer"
    lines = [head]
    for arm, t, row in rows:
        line = f"{arm:<10} {t:<{type_width}} {row['count']:>4} {row['skipped']:>4}"
        for m in metrics:
            value = row["scores"].get(m)
            line += f" {'-' if value is None else f'{100 * value:.1f}':>8}"
        if judge:
            verdict = row.get("judge")
            line += f" {'-' if verdict is None else f'{100 * verdict:.1f}':>6}"
        seconds = row["seconds"]
        line += f"  {'-' if seconds is None else f'{seconds:.2f}':>9}"
        lines.append(line)
    return "\n".join(lines)

