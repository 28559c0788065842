"""lift-mlx's training loop vs mlx-lm's trainer (`mlx_lm.tuner.trainer.train`) and a plain
`nn.value_and_grad` loop.

    python scripts/bench_training.py [--model cpu-bench|smollm2] [--steps 10]
        [--arms lift-mlx,checkpoint,micro] [--samples recite|cloze]

Same model, the same samples, LoRA rank, batch size and number of measured steps (after
the same warm-up), and lift-mlx's driver with Gated Memory instead of LoRA. All are timed on
real (unpadded) tokens per second: lift-mlx pads to fixed buckets (trimmed again when the step
is not compiled), runs the output layer only where the loss is taken and keeps one step in
flight; mlx-lm pads each batch to a multiple of 32 and synchronises after every step; the
plain loop takes full logits over the padded batch and synchronises after every step. Two
more arms run lift-mlx's driver with gradient checkpointing (each block's activations
recomputed in the backward pass) and with micro-batches (half the batch's rows through the
model at a time, the gradients summed before the one update), for what they save in memory
and cost in speed.
Peak memory is MLX's, per arm (the model is loaded anew for each). Prints a table and writes
JSON.

The samples: `recite` (the default) cuts the bench document into recite segments with 128
tokens of context before each, long samples whose loss covers most of their tokens;
`cloze` asks each sentence of a ~4k-token knowledge-world document back by rule, as the
`smollm2` preset's absorb does for most of its steps (short samples, the loss on the answer's
few tokens, no system message), where the output layer that lift-mlx runs only on the targets
and its fixed buckets matter most.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import click

from lift_mlx.adapters import LORA
from lift_mlx.adapters.gated import GATED
from lift_mlx.bench import bench_document, bench_model, format_table, machine_info
from lift_mlx.config import TrainSettings
from lift_mlx.presets import recommended_settings
from lift_mlx.prompts import encode, prompt_tokenizer
from lift_mlx.samples import make_batch, qa_sample, recite_samples
from lift_mlx.tasks.cloze import cloze_pairs
from lift_mlx.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # imported from elsewhere (tests)
from knowledge_world import world_for_tokens  # noqa: E402

# The cloze samples' document: about 4k tokens of a knowledge world (3.6 characters a token),
# two sentences without a fact after each fact sentence, as the experiment's documents.
CLOZE_CHARS, CLOZE_FILLER = 4096 * 36 // 10, 2.0


def cloze_text() -> str:
    """The cloze samples' document (`CLOZE_CHARS`, `CLOZE_FILLER`)."""
    return world_for_tokens(0, CLOZE_CHARS, CLOZE_FILLER).document()


def cloze_samples(tokenizer) -> list:
    """The cloze samples an absorb with the `smollm2` preset makes of `cloze_text()`: each
    sentence asked back by rule, in the preset's prompt (its system message, its window)."""
    preset = recommended_settings("smollm2")
    asking = prompt_tokenizer(tokenizer, preset.get("system_prompt", "model"))
    pairs = cloze_pairs(cloze_text(), preset.get("window_chars", 600))
    return [qa_sample(asking, p.question, p.answer) for p in pairs]


def lift_arm(model_name, samples, settings, warmup, steps, kind=LORA):
    """absorb's own driver (`train.train`), clocked as each step's loss is read."""
    lm = bench_model(model_name)
    kind.attach(lm.model, settings)
    stamps = {}

    def clock(step, total, loss, tokens):
        stamps[step] = (time.perf_counter(), tokens)

    passes = -(-(warmup + steps) * settings.batch_size // len(samples))
    train(lm.model, samples, dataclasses.replace(settings, epochs=passes), 0, clock,
          max_steps=warmup + steps)
    (start, before), (end, after) = stamps[warmup], stamps[warmup + steps]
    return after - before, end - start


def mlx_lm_arm(model_name, samples, settings, warmup, steps):
    import mlx.optimizers as optim
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train

    lm = bench_model(model_name)
    LORA.attach(lm.model, settings)
    dataset = [(list(s.tokens), s.mask.index(1)) for s in samples]
    stamps = {}

    class Clock(TrainingCallback):
        def on_train_loss_report(self, info):
            stamps[info["iteration"]] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArgs(batch_size=settings.batch_size, iters=warmup + steps,
                            steps_per_report=warmup, steps_per_eval=10**9,
                            steps_per_save=10**9, max_seq_length=10**6,
                            adapter_file=str(Path(tmp) / "adapters.safetensors"),
                            grad_checkpoint=settings.grad_checkpoint)
        optimizer = optim.AdamW(learning_rate=settings.lr, weight_decay=0.0)
        train(lm.model, optimizer, dataset, args=args, training_callback=Clock())
    # Every batch of mlx-lm's loop holds batch_size samples; the dataset size is a multiple
    # of it, so `steps` steps see each sample steps * batch_size / len(samples) times.
    per_pass = sum(len(s) - 1 for s in samples)
    tokens = per_pass * steps * settings.batch_size // len(samples)
    return tokens, stamps[warmup + steps] - stamps[warmup]


def plain_arm(model_name, samples, settings, warmup, steps):
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from lift_mlx.train import masked_loss

    lm = bench_model(model_name)
    LORA.attach(lm.model, settings)
    optimizer = optim.AdamW(learning_rate=settings.lr, weight_decay=0.0)
    loss_and_grad = nn.value_and_grad(lm.model, masked_loss)
    length = max(len(s) for s in samples) - 1
    chunks = [samples[i:i + settings.batch_size]
              for i in range(0, len(samples), settings.batch_size)]
    tokens, start = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = make_batch(chunks[i % len(chunks)], settings.batch_size, length, 0)
        loss, grads = loss_and_grad(lm.model, *(mx.array(a) for a in (batch.inputs,
                                                                       batch.targets,
                                                                       batch.mask)))
        optimizer.update(lm.model, grads)
        mx.eval(loss, lm.model.parameters(), optimizer.state)
        tokens += batch.n_tokens if i >= warmup else 0
    return tokens, time.perf_counter() - start


BASELINE = "lift-mlx"
# --arms name: (the label in the table and JSON, the arm)
ARMS = {BASELINE: ("lift-mlx", lift_arm), "mlx-lm": ("mlx-lm trainer", mlx_lm_arm),
        "plain": ("plain value_and_grad", plain_arm),
        "gated": ("lift-mlx, Gated Memory", functools.partial(lift_arm, kind=GATED)),
        "checkpoint": ("lift-mlx, gradient checkpointing", lift_arm),
        "micro": ("lift-mlx, micro-batches of half the batch", lift_arm)}
# (arm, how the ratio reads, its JSON key, the arm over the baseline or the baseline over it)
RATIOS = (("mlx-lm", "lift-mlx / mlx-lm trainer: {:.2f}x training tokens/s (target >= 1.4x)",
           "ratio", False),
          ("plain", "lift-mlx / plain loop: {:.2f}x training tokens/s (target >= 1.2x)",
           "ratio_plain", False),
          ("gated", "Gated Memory / LoRA (both lift-mlx): {:.2f}x training tokens/s",
           "ratio_gated_lora", True),
          ("checkpoint", "gradient checkpointing / none (both lift-mlx): {:.2f}x training "
           "tokens/s", "ratio_checkpoint", True),
          ("micro", "micro-batches / the whole batch at once (both lift-mlx): {:.2f}x training "
           "tokens/s", "ratio_micro", True))


@click.command()
@click.option("--model", default="cpu-bench", show_default=True)
@click.option("--tokens", default=4096, show_default=True, help="Document length.")
@click.option("--seg-len", default=384, show_default=True)
@click.option("--rank", default=8, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--warmup", default=2, show_default=True)
@click.option("--steps", default=10, show_default=True)
@click.option("--arms", "arm_names", default=",".join(ARMS), show_default=True,
              help="Comma-separated arms; the lift-mlx baseline always runs first.")
@click.option("--samples", "kind", type=click.Choice(["recite", "cloze"]), default="recite",
              show_default=True, help="What the arms train on (see the module's help).")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs of every arm, taken in turn (A B C A B C ...); each arm's fastest "
                   "counts, so that a moment of load on a shared machine does not decide a "
                   "ratio.")
@click.option("--out", default="bench_training.json", show_default=True)
def main(model, tokens, seg_len, rank, batch_size, warmup, steps, arm_names, kind, repeats,
         out):
    import mlx.core as mx

    chosen = [a.strip() for a in arm_names.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        raise click.BadParameter(f"unknown arm {unknown[0]!r}; choose from "
                                 f"{', '.join(ARMS)}", param_hint="--arms")
    chosen = [BASELINE] + [a for a in chosen if a != BASELINE]
    lm = bench_model(model)
    if kind == "cloze":
        samples = cloze_samples(lm.tokenizer)
    else:
        ids = encode(lm.tokenizer, bench_document(lm.tokenizer, tokens))
        samples = recite_samples(lm.tokenizer, ids, seg_len, seg_len * 3 // 8, 128,
                                 random.Random(0))
    samples = samples[: len(samples) // batch_size * batch_size]
    # mlx-lm's loop is always compiled; lift-mlx's compiles on GPUs only (CPU: no faster).
    settings = TrainSettings(rank=rank, batch_size=batch_size, grad_checkpoint=False)
    runs: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for arm in chosen:
            gc.collect()
            mx.clear_cache()
            mx.reset_peak_memory()
            label, fn = ARMS[arm]
            arm_settings = dataclasses.replace(
                settings, grad_checkpoint=arm == "checkpoint",
                micro_batch=max(1, batch_size // 2) if arm == "micro" else 0)
            n_tokens, seconds = fn(model, samples, arm_settings, warmup, steps)
            runs.setdefault(arm, []).append(
                {"arm": label, "steps": steps, "tokens": n_tokens, "seconds": seconds,
                 "tok_s": n_tokens / seconds, "peak_gb": mx.get_peak_memory() / 1e9})
    records = {arm: {**max(mine, key=lambda r: r["tok_s"]),
                     "runs_tok_s": [r["tok_s"] for r in mine]} for arm, mine in runs.items()}
    columns = [("arm", "arm", "{}"), ("steps", "steps", "{}"), ("tokens", "tokens", "{:,}"),
               ("seconds", "seconds", "{:.1f}"), ("tok/s", "tok_s", "{:,.0f}"),
               ("peak GB", "peak_gb", "{:.2f}")]
    sizes = sorted(len(s) for s in samples)
    click.echo(f"{len(samples)} {kind} samples of {sizes[0]}-{sizes[-1]} tokens (median "
               f"{sizes[len(sizes) // 2]}), rank {rank}, batch {batch_size}; the fastest of "
               f"{repeats} run(s) per arm")
    click.echo(format_table(list(records.values()), columns))
    base = records[BASELINE]["tok_s"]
    ratios = {}
    for arm, text, key, over_base in RATIOS:
        if arm in records:
            ratios[key] = records[arm]["tok_s"] / base if over_base else \
                base / records[arm]["tok_s"]
            click.echo(text.format(ratios[key]) + f"; peak {records[arm]['peak_gb']:.2f} GB "
                       f"against {records[BASELINE]['peak_gb']:.2f} GB")
    Path(out).write_text(json.dumps({"model": lm.name, "machine": machine_info(),
                                     "samples": {"kind": kind, "count": len(samples),
                                                 "tokens": sum(sizes)},
                                     "repeats": repeats,
                                     "records": list(records.values()), **ratios},
                                     indent=1))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
