"""Accuracy per trained token: every adapter that scripts/lift_experiment.py recorded, placed by
the tokens it trained per token of its document and by how often its answers hold the fact.
Recipes are compared at equal trained tokens, never at equal epochs: a recipe is the settings a
records folder was made with, less the epochs, and each of its epoch counts is a point of its
line.

    python scripts/token_curve.py                                  # the committed records
    python scripts/token_curve.py --records /tmp/exp/records --arms lift,lift+rag

Reads the record folders' settings.json (written by lift_experiment.py beside its records;
a folder without one is skipped), prints a table, writes JSON and, with matplotlib, a PNG
(docs/lift_experiment/token-curve.{json,png} by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lift_mlx.bench import format_table  # noqa: E402
from lift_mlx.config import Settings, preset  # noqa: E402
from lift_mlx.presets import recommended_settings  # noqa: E402

RECORDS = ROOT / "docs" / "lift_experiment"
ADAPTER_ARMS = ("lift", "lift+icl", "lift+rag")
COLUMNS = [("document", "doc", "{}"), ("recipe", "recipe", "{}"), ("epochs", "epochs", "{}"),
           ("arm", "arm", "{}"), ("trained tok / doc tok", "per_doc_token", "{:.1f}"),
           ("trained tokens", "trained_tokens", "{:,}"), ("answers hold the fact", "accuracy",
                                                           "{:.0%}"),
           ("questions", "questions", "{}"), ("absorb s", "absorb_seconds", "{:,.0f}")]


def recipe(settings: dict, model: str) -> str:
    """What `settings` (Settings.to_dict()) change of `model`'s preset, the epochs left out. A
    setting the records predate (missing from `settings`) held its default value."""
    base = preset("default", recommended_settings(model)).to_dict()
    changed = [f"{k}={v}" for stage, defaults in Settings().to_dict().items()
               for k, v in {**defaults, **settings.get(stage, {})}.items()
               if k != "epochs" and base.get(stage, {}).get(k) != v]
    return ", ".join(changed) or "preset"


def points(folders: list[Path], arms: tuple[str, ...]) -> list[dict]:
    """One point per recorded adapter, document and arm; the plain base's arms (no adapter)
    as points at 0 trained tokens."""
    out = []
    for folder in folders:
        for tagged in sorted(p for p in folder.glob("*/") if (p / "settings.json").is_file()):
            settings = json.loads((tagged / "settings.json").read_text())
            model = tagged.name.rsplit("-", 1)[0]
            name = recipe(settings, model)
            for record in sorted(tagged.glob("*.json")):
                if record.name == "settings.json":
                    continue
                data = json.loads(record.read_text())
                run = data["run"]
                by_arm = defaultdict(list)
                for row in data["rows"]:
                    if row["region"] != "all" and row["arm"] in arms:
                        by_arm[row["arm"]].append(row["contains"])
                absorbs = {}
                for a in run.get("absorbs", []):  # a resumed run reuses the adapter: keep the
                    if not a.get("reused") or a["adapter"] not in absorbs:  # absorb that trained
                        absorbs[a["adapter"]] = a
                for arm, hits in by_arm.items():
                    absorb = absorbs.get("lift") if arm in ADAPTER_ARMS else None
                    if arm in ADAPTER_ARMS and not (absorb or {}).get("trained_tokens"):
                        continue  # older records kept no count of trained tokens
                    trained = absorb["trained_tokens"] if absorb else 0
                    out.append({
                        "doc": run["doc"], "recipe": name if absorb else "plain base",
                        "epochs": settings["train"]["epochs"] if absorb else 0, "arm": arm,
                        "trained_tokens": trained,
                        "per_doc_token": trained / run["doc_tokens"],
                        "accuracy": statistics.mean(hits), "questions": len(hits),
                        "absorb_seconds": absorb["seconds"] if absorb else None,
                        "tag": tagged.name})
    # a plain-base arm recorded under several tags is one point; an adapter is one point per
    # absorb, however many folders hold a copy of its record (a study's folder keeps the runs
    # it compares, which may include the main table's)
    unique = {(p["doc"], p["arm"]) if p["recipe"] == "plain base" else
              (p["doc"], p["arm"], p["tag"], p["trained_tokens"], p["absorb_seconds"],
               p["accuracy"]): p for p in out}
    return sorted(unique.values(), key=lambda p: (p["doc"], p["arm"], p["recipe"],
                                                  p["per_doc_token"]))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = sorted({r["doc"] for r in rows if r["recipe"] != "plain base"})  # with an adapter
    cols = min(4, len(docs))
    rows_n = -(-len(docs) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 4 * rows_n), squeeze=False)
    for ax in axes.flat[len(docs):]:
        ax.set_visible(False)
    for ax, doc in zip(axes.flat, docs):
        lines = defaultdict(list)
        for r in rows:
            if r["doc"] == doc:
                lines[r["recipe"], r["arm"]].append(r)
        for (name, arm), pts in sorted(lines.items()):
            if name == "plain base":
                ax.axhline(100 * pts[0]["accuracy"], linestyle=":", color="grey")
                ax.annotate(f"{arm} (plain base)", (0, 100 * pts[0]["accuracy"]), fontsize=7)
                continue
            pts.sort(key=lambda p: p["per_doc_token"])
            ax.plot([p["per_doc_token"] for p in pts], [100 * p["accuracy"] for p in pts],
                    marker="o", label=f"{arm}: {name}"[:70])
        ax.set_xlabel("trained tokens per document token")
        ax.set_ylabel("answers holding the fact (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(left=0)
        ax.set_title(doc)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", action="append", type=Path,
                        help="a records/ folder of lift_experiment.py (repeatable; default: "
                             "every one under docs/lift_experiment)")
    parser.add_argument("--arms", default="lift,lift+rag,rag",
                        help="arms to place (the plain base's at 0 trained tokens)")
    parser.add_argument("--out", type=Path, default=RECORDS / "token-curve")
    args = parser.parse_args()
    folders = args.records or sorted(RECORDS.glob("**/records"))
    rows = points(folders, tuple(args.arms.split(",")))
    if not rows:
        sys.exit("no records with a settings.json under " + ", ".join(map(str, folders)))
    print(format_table(rows, COLUMNS))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    try:
        plot(rows, args.out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed (pip install 'lift-mlx[plot]'): no PNG")
    print(f"wrote {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
