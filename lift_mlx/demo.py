"""`lift-mlx demo`: absorb a bundled document into SmolLM2 and show what the adapter knows.

The document (`data/lighthouse.md`, written for the project) is about a lighthouse that does
not exist, so the base model cannot know its facts. Each question is asked twice with the
question alone, no document in the prompt: once of the plain base, once with the adapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from . import store
from .absorb import absorb
from .absorbed import reset_adapter
from .answer import question_prompt, stream_answer
from .eval.metrics import answer_contains
from .models import load_model
from .progress import Progress

DOCUMENT = Path(__file__).parent / "data" / "lighthouse.md"
MODEL = "smollm2"
# (question, the answer the document gives)
QUESTIONS = (
    ("How many steps does the Kestrel Point lighthouse have?", "142"),
    ("Who was the first keeper of the Kestrel Point lighthouse?", "Tobias Wren"),
    ("How much does a ticket to climb the Kestrel Point lighthouse cost?", "four pounds"),
)
# Sized for a ~250-token document and a 2-core CPU (under 2 minutes of training there):
# short recite segments, no context prefix, the loss averaged per sample so a 3-token answer
# weighs as much as a 128-token segment, and a gentle rate over 6 epochs (measured on SmolLM2,
# see docs/demo.md). Generation runs first and then training (no pipeline), so the batches, and
# with them the answers, are the same at every run.
# The tasks and the generator style are pinned (recite and QA in the lines style, no checks),
# as measured, whatever the model's own preset says; --recite-epochs and --system-prompt come
# from the preset (recite once, no system message: 3/3 right where the earlier 2/3).
SETTINGS = dict(tasks=("recite", "qa"), seg_len=128, stride=64, context_len=0,
                qa_per_sentence=2, sentences_per_task=1, max_tokens=48, style="lines",
                verify_qa=False, rank=16, lr=3e-4, epochs=6, batch_size=4,
                loss_mean="samples", grad_checkpoint=False, pipeline=False)
ANSWER_TOKENS = 32


@dataclass
class DemoRow:
    question: str
    reference: str
    base: str
    adapted: str

    @property
    def base_right(self) -> bool:
        return bool(answer_contains(self.base, [self.reference]))

    @property
    def adapted_right(self) -> bool:
        return bool(answer_contains(self.adapted, [self.reference]))


def run_demo(model: str = MODEL, questions=QUESTIONS, quiet: bool = False, **overrides) -> dict:
    """Absorb the bundled document and answer `questions` with and without the adapter."""
    times = {}
    start = time.perf_counter()
    lm = load_model(model)
    times["model load"] = time.perf_counter() - start
    reset_adapter(lm)
    start = time.perf_counter()
    base = ["".join(stream_answer(lm.model, lm.tokenizer, question_prompt(
        lm.tokenizer, q, None, lm.window, ANSWER_TOKENS), ANSWER_TOKENS)) for q, _ in questions]
    times["base answers"] = time.perf_counter() - start
    absorbed = absorb(DOCUMENT, lm, reuse=False, progress=Progress(quiet=quiet),
                      out=store.home() / "demo-adapter", **{**SETTINGS, **overrides})
    start = time.perf_counter()
    adapted = [absorbed.ask(q, context=False, max_tokens=ANSWER_TOKENS) for q, _ in questions]
    times["adapted answers"] = time.perf_counter() - start
    rows = [DemoRow(q, ref, b, a) for (q, ref), b, a in zip(questions, base, adapted)]
    return {"rows": rows, "absorbed": absorbed, "times": times}


def print_demo(result: dict) -> None:
    """The answers side by side, then what was absorbed and how long each stage took."""
    def mark(ok: bool) -> str:
        return click.style("right", fg="green") if ok else click.style("wrong", fg="red")

    rows = result["rows"]
    for i, r in enumerate(rows, 1):
        click.echo(f"\nQ{i}  {r.question}   (the document says: {r.reference})")
        click.echo(f"    base      [{mark(r.base_right)}] {_one_line(r.base)}")
        click.echo(f"    adapted   [{mark(r.adapted_right)}] {_one_line(r.adapted)}")
    base = sum(r.base_right for r in rows)
    adapted = sum(r.adapted_right for r in rows)
    click.echo(f"\nright without the document in the prompt: base {base}/{len(rows)}, "
               f"adapted {adapted}/{len(rows)}")
    absorbed = result["absorbed"]
    report = absorbed.report
    t = report.train
    times = {**{k: v for k, v in result["times"].items() if k == "model load"},
             **report.seconds, **{k: v for k, v in result["times"].items()
                                  if k != "model load"}}
    click.echo(f"absorbed     {report.doc_tokens} tokens: {report.samples['recite']} recite "
               f"samples, {report.samples['qa']} QA pairs written by the model itself; "
               f"{t.steps} steps, {t.tokens:,} tokens, final loss {t.final_loss:.3f}")
    click.echo("time         " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    click.echo(f"adapter      {absorbed.adapter_path}")


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
