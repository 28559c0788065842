"""Peak memory of an absorb by document length: does anything but the document's tokens and its
index grow with the document? Each length is absorbed in a fresh process (a knowledge-world
document, the tiny model, recite and cloze, one epoch), and its peak resident set size is read
from the OS.

    python scripts/bench_memory.py                      # 10k and 100k tokens
    python scripts/bench_memory.py --lengths 10000,50000,100000

Prints a table and writes JSON (docs/bench/bench_memory.json by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = [("tokens", "doc_tokens", "{:,}"), ("samples", "samples_made", "{:,}"),
           ("trained tokens", "train_tokens", "{:,}"), ("seconds", "seconds", "{:.1f}"),
           ("peak RSS MB", "peak_rss_mb", "{:.0f}"), ("x first", "x_first", "{:.2f}")]

CHILD = """
import resource, sys, time, json
from pathlib import Path
from lift_mlx.absorb import absorb
from lift_mlx.models import load_model
from lift_mlx.progress import Progress
lm = load_model("tiny")
doc = Path(sys.argv[1])
start = time.perf_counter()
absorbed = absorb(doc, lm, tasks=("recite", "cloze"), epochs=1, seg_len=256, stride=256,
                  context_len=0, rank=4, grad_checkpoint=False, progress=Progress(quiet=True))
report = absorbed.report
print(json.dumps({"doc_tokens": report.doc_tokens, "seconds": time.perf_counter() - start,
                  "train_tokens": report.train.tokens, "samples": report.samples,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def document(tokens: int, tokenizer) -> str:
    """About `tokens` tokens of a knowledge-world document (scripts/knowledge_world.py: a fact in
    every few sentences, so the cloze task makes samples all through it)."""
    from knowledge_world import world_for_tokens

    probe = world_for_tokens(1, 20_000, 2.0).document()
    per_char = len(tokenizer.encode(probe)) / len(probe)
    return world_for_tokens(7, int(tokens / per_char), 2.0).document()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10000,100000", help="document lengths in tokens")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bench_memory.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    from lift_mlx.bench import format_table
    from lift_mlx.models import load_model

    tokenizer = load_model("tiny").tokenizer
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.lengths.split(",")]:
            doc = Path(tmp) / f"doc-{n}.txt"
            doc.write_text(document(n, tokenizer), encoding="utf-8")
            env = {**os.environ, "LIFT_MLX_HOME": str(Path(tmp) / f"home-{n}"),
                   "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, "-c", CHILD, str(doc)], env=env,
                                  capture_output=True, text=True, check=True)
            rows.append({"length": n, **json.loads(done.stdout.strip().splitlines()[-1])})
    for r in rows:
        r["samples_made"] = sum(r["samples"].values())
        r["x_first"] = r["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(format_table(rows, COLUMNS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"platform": platform.platform(),
                                           "when": time.strftime("%Y-%m-%d")},
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
