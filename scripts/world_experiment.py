"""Does LIFT help? The knowledge-world experiment.

World B (new entities, never seen by the base model) is written as one document 8x and 32x
the model's window. Each arm answers held-out question phrasings about facts anywhere in it,
through lift-mlx's own evaluation (`lift_mlx.evaluate.run_eval`):

- icl-trunc: the base model with the head+tail view of the document that fits its window;
- raw-ft:    an adapter trained on recite segments only (fine-tuning on the raw text);
- lift:      an adapter trained on recite segments + QA tasks the model wrote itself;
- lift+icl:  the lift adapter with the head+tail view in the prompt.

Accuracy is exact match, split by whether the fact's sentence lies inside the head+tail view
that the in-context arms actually see. Prints a table, writes JSON and a PNG.

    python scripts/world_experiment.py                       # models/world-tiny, sizes 8,32
    python scripts/world_experiment.py --sizes 8 --seeds 0,1,2 --questions 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx import prompts  # noqa: E402
from lift_mlx.answer import question_prompt  # noqa: E402
from lift_mlx.config import preset  # noqa: E402
from lift_mlx.datasets import EvalDoc, load_native  # noqa: E402
from lift_mlx.metrics import exact_match  # noqa: E402
from lift_mlx.world import world_for_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("icl-trunc", "raw-ft", "lift", "lift+icl")
ORACLE_ARMS = ("lift (oracle tasks)", "lift+icl (oracle tasks)")
REGIONS = ("inside", "outside", "all")
MAX_TOKENS = 32  # answers are a word or a year; the rest of the window holds the document
WORLD_B_SEED = 1000  # world A is seed 0; world B's entities are new

# Absorb settings for a ~1M-parameter model with a 512-token window. Same for raw-ft and lift:
# the arms differ only in the tasks.
SETTINGS = dict(
    seg_len=256, stride=96,  # the default preset's 5/8 overlap at a quarter of its length
    context_len=128,  # head+tail prefix of recite samples
    qa_per_sentence=1, sentences_per_task=2,
    window_chars=400,  # generator's preceding text: what the base model was taught to read
    max_tokens=160, generator_batch_size=32,  # generator budget and batch
    rank=16, lr=1e-3, epochs=5, batch_size=8,
    grad_checkpoint=False, compile=False,
)


def settings_for(args) -> object:
    s = dict(SETTINGS)
    s["epochs"] = args.epochs
    s["lr"] = args.lr
    return preset("default", **s)


def chars_per_token(tokenizer) -> float:
    text = world_for_tokens(WORLD_B_SEED - 1, 20_000).document()
    return len(text) / len(prompts.encode(tokenizer, text))


def world_b_doc(seed: int, size: int, window: int, cpt: float, folder: Path):
    """World B for this seed, as a native-format document of ~size x window tokens."""
    world = world_for_tokens(WORLD_B_SEED + seed, int(size * window * cpt))
    path = folder / f"world-b-{size}x-seed{seed}.jsonl"
    world.to_native_jsonl(path, f"b{size}x-s{seed}", phrasings="heldout")
    return world, next(load_native(path))


def pick_questions(doc: EvalDoc, world, tokenizer, window: int, n: int, rng: random.Random):
    """Up to n questions with the fact inside the in-context view and n outside it; each
    question's region is taken from the very prompt the in-context arms build."""
    doc_tokens = prompts.encode(tokenizer, doc.document)
    region = {}
    for q in doc.questions:
        ids = question_prompt(tokenizer, q.question, doc_tokens, window, MAX_TOKENS)
        inside = world.fact_offsets(tokenizer.decode(ids))
        key = (q.meta["entity"], q.meta["attribute"])
        region[q.id] = "inside" if key in inside else "outside"
    chosen = []
    for r in ("inside", "outside"):
        group = [q for q in doc.questions if region[q.id] == r]
        chosen += rng.sample(group, min(n, len(group)))
    for q in chosen:
        q.meta["region"] = region[q.id]
    return EvalDoc(doc.id, doc.document, chosen, doc.source), len(doc_tokens)


def summarize(rows: list[dict]) -> dict:
    """size -> arm -> region -> {mean, stdev, per_seed, n}: accuracy in [0, 1]."""
    out: dict = {}
    for size in sorted({r["size"] for r in rows}):
        out[size] = {}
        for arm in [a for a in ARMS + ORACLE_ARMS
                    if any(r["arm"] == a and r["size"] == size for r in rows)]:
            out[size][arm] = {}
            for region in REGIONS:
                per_seed = []
                n = 0
                for seed in sorted({r["seed"] for r in rows if r["size"] == size}):
                    hits = [r["em"] for r in rows if r["size"] == size and r["seed"] == seed
                            and r["arm"] == arm and region in ("all", r["region"])]
                    if hits:
                        per_seed.append(sum(hits) / len(hits))
                        n += len(hits)
                if per_seed:
                    out[size][arm][region] = {
                        "mean": statistics.mean(per_seed),
                        "stdev": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
                        "per_seed": per_seed, "n": n}
    return out


def format_table(summary: dict) -> str:
    lines = ["| document | arm | inside window | outside window | all |", "|---|---|---|---|---|"]
    for size, arms in summary.items():
        for arm, regions in arms.items():
            cells = []
            for region in REGIONS:
                v = regions.get(region)
                cells.append("-" if v is None else
                             f"{100 * v['mean']:.1f} ± {100 * v['stdev']:.1f} (n={v['n']})")
            lines.append(f"| {size}x window | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(summary)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 3.8), squeeze=False)
    width = 0.8 / max(len(arms) for arms in summary.values())
    for ax, size in zip(axes[0], sizes):
        for i, arm in enumerate(summary[size]):
            regions = summary[size][arm]
            means = [100 * regions.get(r, {}).get("mean", 0.0) for r in REGIONS]
            errs = [100 * regions.get(r, {}).get("stdev", 0.0) for r in REGIONS]
            xs = [x + (i - (len(summary[size]) - 1) / 2) * width
                  for x in range(len(REGIONS))]
            ax.bar(xs, means, width, yerr=errs, label=arm, capsize=2)
        ax.set_xticks(range(len(REGIONS)))
        ax.set_xticklabels(["fact inside\ntruncated view", "fact outside", "all"])
        top = max(100 * v.get("mean", 0.0) + 100 * v.get("stdev", 0.0)
                  for regions in summary[size].values() for v in regions.values())
        ax.set_ylim(0, min(100, max(10, 1.25 * top)))
        ax.set_ylabel("exact match, held-out phrasings (%)")
        ax.set_title(f"document = {size}x the model's window")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_oracle_tasks(lm, world, doc: EvalDoc, settings, rng: random.Random) -> None:
    """Put a perfect generator's QA pairs (one train-phrasing question per fact) in the QA
    cache, so `lift` trains on them instead of the model's own: this tells a weak generator
    apart from QA tasks that do not help."""
    from lift_mlx.absorb import qa_cache_file
    from lift_mlx.generator_styles import QAPair
    from lift_mlx.ingest import text_document
    from lift_mlx.synthesize import SynthReport, save_cached
    from lift_mlx.world import TEMPLATES, TRAIN_PHRASINGS

    pairs = [QAPair(rng.choice(TEMPLATES[f.kind][f.attribute][1][:TRAIN_PHRASINGS])
                    .format(e=f.entity), f.value) for f in world.facts]
    sha = text_document(doc.document).sha256
    path = qa_cache_file(sha, lm, settings)
    save_cached(path, pairs, SynthReport(kept=len(pairs)))


def run_one(lm, size: int, seed: int, args, settings, work: Path) -> list[dict]:
    """Absorb and answer one world B document in every arm; rows of (arm, region, em)."""
    from lift_mlx.evaluate import run_eval
    from lift_mlx.progress import Progress

    window = lm.window
    world, doc = world_b_doc(seed, size, window, chars_per_token(lm.tokenizer), work)
    doc, n_tokens = pick_questions(doc, world, lm.tokenizer, window, args.questions,
                                   random.Random(seed))
    print(f"== {size}x window, seed {seed}: {n_tokens} tokens, {len(world.facts)} facts, "
          f"{len(doc.questions)} questions", flush=True)
    t = time.perf_counter()
    arms = ARMS
    folder = work / f"eval-{size}x-s{seed}-e{args.epochs}-lr{args.lr:g}"
    if args.oracle_tasks:
        arms = ("lift", "lift+icl")
        folder = folder.with_name("oracle-" + folder.name)
        write_oracle_tasks(lm, world, doc, settings, random.Random(seed))
    records = run_eval([doc], lm, folder, arms=arms, settings=settings, max_tokens=MAX_TOKENS,
                       progress=Progress(quiet=True))
    if args.oracle_tasks:
        for r in records:
            r["arm"] += " (oracle tasks)"
    absorbs = [json.loads(line) for line in (folder / "absorbs.jsonl").read_text().splitlines()]
    rows = [{"size": size, "seed": seed, "arm": r["arm"], "region": r["meta"]["region"],
             "em": exact_match(r["prediction"] or "", r["references"])} for r in records]
    run = {"size": size, "seed": seed, "doc_tokens": n_tokens, "facts": len(world.facts),
           "seconds": time.perf_counter() - t, "absorbs": absorbs,
           "examples": [{k: r[k] for k in ("arm", "question", "references", "prediction")}
                        for r in records[:: max(1, len(records) // 12)]]}
    (folder / "rows.json").write_text(json.dumps({"run": run, "rows": rows}, indent=1))
    print(format_table(summarize(rows)), flush=True)
    print(f"   ({run['seconds']:.0f} s; absorbs: "
          + ", ".join(f"{a['adapter']} {a['qa_pairs']} QA pairs {a['seconds']:.0f} s"
                      for a in absorbs) + ")", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "world-tiny"))
    parser.add_argument("--sizes", default="8,32", help="document lengths in model windows")
    parser.add_argument("--seeds", default="0,1,2", help="world B seeds, per size")
    parser.add_argument("--seeds-large", default="0,1,2", help="seeds for sizes above 8")
    parser.add_argument("--questions", type=int, default=60, help="per region and document")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument("--lr", type=float, default=SETTINGS["lr"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "world_experiment"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "lift-world-exp"),
                        help="documents, adapters and per-question records (resumable)")
    parser.add_argument("--oracle-tasks", action="store_true",
                        help="lift arms only, trained on a perfect generator's QA pairs")
    parser.add_argument("--report-only", action="store_true",
                        help="no runs: report every finished run in --work (runs of several "
                             "processes started with different --sizes/--seeds)")
    args = parser.parse_args()

    from lift_mlx.models import load_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # The oracle run replaces QA caches and trains its own lift adapters: a store of its own.
    home = "lift-home-oracle" if args.oracle_tasks else "lift-home"
    os.environ.setdefault("LIFT_MLX_HOME", str(work / home))
    lm = load_model(args.model)
    settings = settings_for(args)
    start = time.perf_counter()
    if not args.report_only:
        for size in [int(s) for s in args.sizes.split(",")]:
            seeds = args.seeds if size <= 8 else args.seeds_large
            for seed in [int(s) for s in seeds.split(",")]:
                run_one(lm, size, seed, args, settings, work)

    done = [json.loads(p.read_text())
            for p in sorted(work.glob(f"*eval-*-e{args.epochs}-lr{args.lr:g}/rows.json"))]
    rows = [r for d in done for r in d["rows"]]
    summary = summarize(rows)
    table = format_table(summary)
    print(f"\nExact match (%) on held-out phrasings, mean ± stdev over seeds "
          f"({time.perf_counter() - start:.0f} s):\n{table}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "window": lm.window, "max_tokens": MAX_TOKENS,
              "settings": settings.to_dict(), "summary": summary,
              "runs": [d["run"] for d in done], "rows": rows, "table": table}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    try:
        plot(summary, out / "world_experiment.png")
    except ImportError:
        print("matplotlib is not installed (pip install 'lift-mlx[plot]'): no PNG")


if __name__ == "__main__":
    main()
