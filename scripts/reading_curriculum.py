"""Teach a knowledge-world model to read: a curriculum of ever longer contexts.

The base model of `scripts/train_world_model.py` stores facts but does not answer from its
prompt. This tool continues its training on reading alone, in stages: questions about a
never-seen world whose context is 1 sentence, then up to 2, 4, ... sentences (the fact's
sentence always among them), in the layout `ask` uses. After each stage it measures exact
match on held-out phrasings with contexts of 1, 4 and 16 sentences. Prints a table, writes
JSON (and, with --out, the model).

    python scripts/reading_curriculum.py                      # models/world-tiny, 4 stages
    python scripts/reading_curriculum.py --schedule 400:1,400:4 --lr 2e-3 --json r.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx import prompts  # noqa: E402
from lift_mlx.answer import question_prompt  # noqa: E402
from lift_mlx.metrics import exact_match  # noqa: E402
from lift_mlx.samples import Sample, end_of_turn, make_batch  # noqa: E402
from lift_mlx.world_model import WorldModelSettings, fresh_world, generate_batch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_TOKENS = 32  # answer budget left in the window, as in the world experiment
EVAL_SENTENCES = (1, 4, 16)


def reading_example(tokenizer, rng: random.Random, sentences: int, phrasings: str,
                    settings: WorldModelSettings) -> tuple[list[int], str] | None:
    """(prompt ids, answer): `sentences` consecutive sentences of a fresh world as context
    and a question about one fact among them."""
    world = fresh_world(rng, settings)
    text = " ".join(world.document().split())
    parts = [p.strip() + "." for p in text.split(". ") if p.strip()]
    parts = [p[:-1] if p.endswith("..") else p for p in parts]
    start = rng.randint(0, max(0, len(parts) - sentences))
    context = " ".join(parts[start:start + sentences])
    shown = list(world.fact_offsets(context))
    if not shown:
        return None
    key = rng.choice(shown)
    qa = rng.choice([q for q in world.questions(phrasings) if (q.entity, q.attribute) == key])
    prompt = question_prompt(tokenizer, qa.question, prompts.encode(tokenizer, context),
                             settings.window, MAX_TOKENS)
    return prompt, qa.answer


def accuracy(model, tokenizer, sentences: int, n: int, rng: random.Random,
             settings: WorldModelSettings) -> float:
    examples = []
    while len(examples) < n:
        example = reading_example(tokenizer, rng, sentences, "heldout", settings)
        if example:
            examples.append(example)
    answers = generate_batch(model, tokenizer, [p for p, _ in examples], 12)
    return sum(exact_match(a, [v]) for a, (_, v) in zip(answers, examples)) / n


def main() -> None:
    import mlx_lm
    from mlx_lm.utils import save_model

    from lift_mlx.config import TrainSettings
    from lift_mlx.train import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "world-tiny"))
    parser.add_argument("--schedule", default="200:1,200:2,200:4,200:8",
                        help="stages as STEPS:MAX_SENTENCES, comma-separated")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--questions", type=int, default=40, help="per accuracy check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--out", default=None, help="save the trained model here")
    args = parser.parse_args()

    settings = WorldModelSettings()
    model, tokenizer = mlx_lm.load(args.model)
    trainer = Trainer(model, TrainSettings(lr=args.lr, grad_checkpoint=False, compile=False,
                                           seed=args.seed))
    rng = random.Random(f"curriculum:{args.seed}")
    stages = [tuple(int(x) for x in part.split(":")) for part in args.schedule.split(",")]

    def check(step: int, max_sentences: int, loss: float | None) -> dict:
        eval_rng = random.Random(f"check:{args.seed}")  # the same questions at every check
        row = {"step": step, "max_sentences": max_sentences, "loss": loss}
        for k in EVAL_SENTENCES:
            row[f"acc_{k}"] = accuracy(model, tokenizer, k, args.questions, eval_rng, settings)
        print(f"{step:>6} {max_sentences:>6} {'-' if loss is None else f'{loss:.3f}':>7} "
              + " ".join(f"{100 * row[f'acc_{k}']:>6.1f}" for k in EVAL_SENTENCES), flush=True)
        return row

    print(f"{'step':>6} {'sent.':>6} {'loss':>7} " + " ".join(f"{'k=' + str(k):>6}"
                                                         for k in EVAL_SENTENCES))
    rows = [check(0, 0, None)]
    step, start = 0, time.perf_counter()
    for steps, max_sentences in stages:
        losses = []
        for _ in range(steps):
            samples = []
            while len(samples) < args.batch_size:
                example = reading_example(tokenizer, rng, rng.randint(1, max_sentences),
                                          "train", settings)
                if example:
                    prompt, answer = example
                    target = prompts.encode(tokenizer, answer) + end_of_turn(tokenizer)
                    samples.append(Sample(tuple(prompt + target),
                                          (0,) * len(prompt) + (1,) * len(target), "read"))
            length = max(len(s) for s in samples) - 1
            model.train()
            losses.append(trainer.step(make_batch(samples, args.batch_size, length,
                                                  tokenizer.pad_token_id)).item())
            model.eval()
            step += 1
        tail = losses[-max(1, len(losses) // 4):]
        rows.append(check(step, max_sentences, sum(tail) / len(tail)))
    seconds = time.perf_counter() - start
    print(f"exact match (%) on held-out phrasings, contexts of k sentences; {seconds / 60:.1f} "
          "min of training and checks")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "args": vars(args),
                                               "rows": rows, "seconds": seconds}, indent=1))
    if args.out:
        shutil.copytree(args.model, args.out, dirs_exist_ok=True)
        save_model(args.out, model)


if __name__ == "__main__":
    main()
