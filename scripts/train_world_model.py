"""Train the knowledge-world base model from scratch and check what it can do.

    python scripts/train_world_model.py                 # models/world-tiny, ~35 min on 2 cores
    python scripts/train_world_model.py OUT --tiny      # the seconds-long variant used in tests

Prints progress and final losses, then measures on held-out question phrasings: in-context
accuracy on a world A document view, closed-book accuracy on world A facts, and how often the
model's answer to the generator prompt parses as QA JSON. Writes OUT/world_model.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx.world_model import (  # noqa: E402
    WorldModelSettings,
    check_world_model,
    tiny_settings,
    train_world_model,
)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "models" / "world-tiny"))
    parser.add_argument("--tiny", action="store_true", help="the fast test/CI variant")
    parser.add_argument("--train-tokens", type=int, help="override the corpus size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions", type=int, default=200, help="questions per check")
    args = parser.parse_args()

    overrides = {"seed": args.seed}
    if args.train_tokens:
        overrides["train_tokens"] = args.train_tokens
    settings = (tiny_settings(**overrides) if args.tiny
                else WorldModelSettings(**overrides))
    start = time.perf_counter()
    report = train_world_model(args.out, settings, log=lambda m: print(m, flush=True))
    print(f"trained {report.steps} steps, {report.tokens:,} tokens in "
          f"{report.seconds / 60:.1f} min; loss {report.first_loss:.3f} -> "
          f"{report.final_loss:.3f}; by kind "
          + ", ".join(f"{k} {v:.3f}" for k, v in report.final_loss_by_kind.items()))
    checks = check_world_model(args.out, settings, n_questions=args.questions,
                               rng=random.Random(args.seed))
    for name, value in checks.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    result = {"settings": settings.to_dict(), "report": report.__dict__, "checks": checks,
              "wall_seconds": time.perf_counter() - start}
    (Path(args.out) / "world_model.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
