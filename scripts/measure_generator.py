"""How well does a model write its own QA tasks? Generator styles compared on the project's
documents.

For each document and style: the requests made, the pairs kept by lift-mlx's filter, the share
of sentences that got at least one kept pair (a pair is credited to the sentence of its window
that holds its answer), the generation time, and for knowledge-world documents (whose facts
are known) the share of kept pairs that are right: the answer is a fact's value and the
question names that fact's entity. Writes JSON and a Markdown sample of kept pairs (with their
sentence) for checking by hand.

    python scripts/measure_generator.py                       # SmolLM2, styles lines,answers
    python scripts/measure_generator.py --styles answers --sample 50
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from knowledge_world import world_for_tokens  # noqa: E402

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx.eval.metrics import normalize_answer  # noqa: E402
from lift_mlx.split import split_sentences  # noqa: E402

DATA = Path(lift_mlx.__file__).parent / "data"


def documents(args) -> dict[str, tuple[str, object]]:
    """name -> (text, world or None)."""
    docs = {}
    for name in args.docs.split(","):
        if name == "world":
            world = world_for_tokens(7000, args.world_chars, args.filler)
            docs[f"knowledge-world ({args.world_chars} chars)"] = (world.document(), world)
        else:
            docs[name] = ((DATA / name).read_text(), None)
    return docs


def contains(haystack: str, needle: str) -> bool:
    return f" {normalize_answer(needle)} " in f" {normalize_answer(haystack)} "


def right(pair, world, window) -> bool:
    """The pair is a fact stated in the window: one of its entity and value is the answer and
    the question names the other ("When was X born?" 1826, or "Who was born in 1826?" X)."""
    return any(f.value in window.text and f.entity in window.text and (
        (contains(pair.answer, f.value) and contains(pair.question, f.entity))
        or (contains(pair.answer, f.entity) and contains(pair.question, f.value)))
        for f in world.facts)


def forward_facts(pair, world) -> set:
    """The facts `pair` asks as the experiment's questions do: the entity named, its value
    the answer (by key; empty if none)."""
    return {f.key for f in world.facts
            if contains(pair.answer, f.value) and contains(pair.question, f.entity)}


def measure(lm, text: str, world, style, settings, window_chars: int) -> dict:
    from lift_mlx.synthesize import QAStream, task_windows

    windows = task_windows(text, settings.sentences_per_task, window_chars)
    start = time.perf_counter()
    stream = QAStream(lm.model, lm.tokenizer, windows, settings, style=style)
    while not stream.done:
        stream.step()
    report = stream.close()
    seconds = time.perf_counter() - start
    covered, total, kept, asked = set(), 0, [], set()
    for w_index, window in enumerate(windows):
        sentences = split_sentences(window.target)
        total += len(sentences)
        for r_index, (w, _) in enumerate(stream.requests):
            if w is not window:
                continue
            for pair in stream.kept_by_request.get(r_index, []):
                home = next((i for i, s in enumerate(sentences) if contains(s, pair.answer)),
                            None)
                if home is not None:
                    covered.add((w_index, home))
                facts = forward_facts(pair, world) if world else set()
                asked |= facts
                kept.append({"question": pair.question, "answer": pair.answer,
                             "sentence": sentences[home] if home is not None else window.target,
                             "right": right(pair, world, window) if world else None,
                             "forward": bool(facts) if world else None})
    row = {"style": style.name, "requests": report.requests, "kept": report.kept,
           "dropped": report.dropped, "sentences": total, "covered": len(covered),
           "coverage": len(covered) / total if total else 0.0,
           "generated_tokens": report.generated_tokens, "seconds": round(seconds, 1),
           "pairs": kept}
    if world:
        facts = {f.key for f in world.facts}
        row["right"] = sum(p["right"] for p in kept) / len(kept) if kept else 0.0
        row["forward"] = sum(p["forward"] for p in kept) / len(kept) if kept else 0.0
        row["facts"] = len(facts)
        row["facts_asked_forward"] = len(asked)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--styles", default="lines,answers")
    parser.add_argument("--docs", default="lighthouse.md,demo.md,world",
                        help="files of lift_mlx/data, and 'world' for a knowledge world")
    parser.add_argument("--verify-qa", action="store_true", help="check pairs by asking back")
    parser.add_argument("--qa-per-sentence", type=int, default=1)
    parser.add_argument("--sentences-per-task", type=int, default=1)
    parser.add_argument("--window-chars", type=int, default=600)
    parser.add_argument("--world-chars", type=int, default=4000)
    parser.add_argument("--filler", type=float, default=2.0)
    parser.add_argument("--sample", type=int, default=50, help="kept pairs to check by hand")
    parser.add_argument("--out", default="measure_generator.json")
    args = parser.parse_args()

    from lift_mlx.config import SynthSettings
    from lift_mlx.generator_styles import resolve_style
    from lift_mlx.models import load_model

    lm = load_model(args.model)
    settings = SynthSettings(qa_per_sentence=args.qa_per_sentence, max_tokens=64,
                             sentences_per_task=args.sentences_per_task,
                             window_chars=args.window_chars, verify_qa=args.verify_qa)
    rows = []
    for name, (text, world) in documents(args).items():
        for style in args.styles.split(","):
            row = measure(lm, text, world, resolve_style(style), settings, args.window_chars)
            row["document"] = name
            rows.append(row)
            extra = (f", right {100 * row['right']:.0f}% (entity -> value "
                     f"{100 * row['forward']:.0f}%, facts asked so "
                     f"{row['facts_asked_forward']}/{row['facts']})" if "right" in row else "")
            print(f"{name:34s} {style:8s} requests {row['requests']:4d} kept {row['kept']:4d} "
                  f"sentences covered {row['covered']}/{row['sentences']} "
                  f"({100 * row['coverage']:.0f}%){extra}, {row['seconds']:.0f} s "
                  f"dropped {row['dropped']}", flush=True)
    out = Path(args.out)
    out.write_text(json.dumps({"model": lm.name, "settings": vars(args), "rows": rows},
                              indent=1))
    lines = []
    for row in rows:
        pairs = random.Random(0).sample(row["pairs"], min(args.sample, len(row["pairs"])))
        lines += [f"## {row['document']}, style {row['style']}", ""]
        lines += [f"{i}. {p['sentence']}\n   Q: {p['question']}\n   A: {p['answer']}"
                  for i, p in enumerate(pairs, 1)]
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
