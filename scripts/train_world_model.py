"""Train the knowledge-world base model from scratch and check what it can do.

    python scripts/train_world_model.py                 # models/world-tiny: corpus, then reading
    python scripts/train_world_model.py OUT --tiny      # the seconds-long variant used in tests
    python scripts/train_world_model.py OUT --reading-from OUT --schedule 150:4,150:4 \
        --rehearse-every 2 --generator-rows 8           # a second reading run, as world-tiny's

Two stages. The corpus stage trains a fresh model on world A's prose, reading, closed-book and
generator samples (~23 min on 2 cores). The reading stage then continues it on questions about
never-seen worlds with contexts that grow from 1 sentence to 8 (`--schedule`, ~18 min),
rehearsing closed-book answers and generator demonstrations as it goes, and prints held-out
reading and closed-book accuracy after each of its stages. `--reading-from MODEL` runs the
reading stage alone, from an existing model (OUT itself continues it); `--no-reading` stops
after the corpus. `models/world-tiny` is the first command followed by the second (~8 min);
its world_model.json lists both reading runs.

Last, it measures on held-out question phrasings: in-context accuracy on a world A document
view and a never-seen world's, one-sentence reading, copying, closed-book accuracy on world A,
and how often the answer to the generator prompt parses as QA JSON. Writes OUT/world_model.json
(also after each reading stage, so an interrupted run keeps what it measured).
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
    ReadingSettings,
    WorldModelSettings,
    check_world_model,
    tiny_settings,
    train_reading,
    train_world_model,
)

ROOT = Path(__file__).resolve().parent.parent
TINY_READING = dict(schedule=((3, 1), (2, 2)), batch_size=4, check_sentences=(1, 4),
                    check_questions=3)


def schedule(text: str) -> tuple[tuple[int, int], ...]:
    """'300:1,300:2' -> ((300, 1), (300, 2)): steps and maximum sentences of each stage."""
    try:
        stages = tuple(tuple(int(x) for x in part.split(":")) for part in text.split(","))
    except ValueError:
        stages = ()
    if not stages or any(len(s) != 2 or min(s) < 1 for s in stages):
        raise argparse.ArgumentTypeError(f"expected STEPS:MAX_SENTENCES,... got {text!r}")
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "models" / "world-tiny"))
    parser.add_argument("--tiny", action="store_true", help="the fast test/CI variant")
    parser.add_argument("--train-tokens", type=int, help="override the corpus size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions", type=int, default=200, help="questions per final check")
    parser.add_argument("--reading-from", metavar="MODEL",
                        help="skip the corpus stage: run the reading stage on this model")
    parser.add_argument("--no-reading", action="store_true", help="stop after the corpus")
    parser.add_argument("--schedule", type=schedule, help="reading stages, STEPS:MAX_SENTENCES,...")
    parser.add_argument("--rehearse-every", type=int,
                        help="every n-th reading step rehearses closed-book and generator "
                             "samples (0: reading only)")
    parser.add_argument("--generator-rows", type=int,
                        help="generator demonstrations per rehearsal batch")
    parser.add_argument("--reading-lr", type=float)
    args = parser.parse_args()

    overrides = {"seed": args.seed}
    if args.train_tokens:
        overrides["train_tokens"] = args.train_tokens
    settings = (tiny_settings(**overrides) if args.tiny
                else WorldModelSettings(**overrides))
    reading = ReadingSettings(**(TINY_READING if args.tiny else {}))
    for name, value in (("schedule", args.schedule), ("rehearse_every", args.rehearse_every),
                        ("generator_rows", args.generator_rows), ("lr", args.reading_lr)):
        if value is not None:
            setattr(reading, name, value)
    out = Path(args.out)
    start = time.perf_counter()
    log = lambda m: print(m, flush=True)  # noqa: E731
    result: dict = {"settings": settings.to_dict()}

    def write() -> None:
        result["wall_seconds"] = time.perf_counter() - start
        (out / "world_model.json").write_text(json.dumps(result, indent=1))

    runs: list[dict] = []
    if args.reading_from:
        source = Path(args.reading_from) / "world_model.json"
        if source.exists():  # keep the record of how the starting model was trained
            previous = json.loads(source.read_text())
            result["settings"], result["report"] = previous["settings"], previous.get("report")
            runs = previous.get("reading_runs", [])
    else:
        report = train_world_model(out, settings, log=log)
        print(f"trained {report.steps} steps, {report.tokens:,} tokens in "
              f"{report.seconds / 60:.1f} min; loss {report.first_loss:.3f} -> "
              f"{report.final_loss:.3f}; by kind "
              + ", ".join(f"{k} {v:.3f}" for k, v in report.final_loss_by_kind.items()))
        result["report"] = report.__dict__
    if not args.no_reading:
        run = {"from": str(args.reading_from or "corpus stage"), "settings": reading.to_dict(),
               "rows": []}
        result["reading_runs"] = runs + [run]

        def stage_done(rows: list[dict]) -> None:
            run["rows"] = rows
            write()

        train_reading(args.reading_from or out, out, settings, reading, log=log, seed=args.seed,
                      on_stage=stage_done)
    checks = check_world_model(out, settings, n_questions=args.questions,
                               rng=random.Random(args.seed))
    for name, value in checks.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")
    result["checks"] = checks
    write()


if __name__ == "__main__":
    main()
