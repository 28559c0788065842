"""Absorb time at 2k vs 8k tokens: LIFT should scale linearly with the document's length,
while in-context prefill does not.

    python scripts/bench_scaling.py [--model cpu-bench] [--short 2048] [--long 8192]

Same model and settings (the fast preset, a short QA budget) for both lengths, with the
pipeline. Prints a table and writes JSON.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from lift_mlx.bench import (
    FULL_SETTINGS,
    absorb_arm,
    baseline_arms,
    bench_document,
    bench_model,
    format_table,
    machine_info,
    matmul_peak,
    memory_bandwidth,
)


@click.command()
@click.option("--model", default="cpu-bench", show_default=True)
@click.option("--short", default=2048, show_default=True)
@click.option("--long", "long_", default=8192, show_default=True)
@click.option("--out", default="bench_scaling.json", show_default=True)
def main(model, short, long_, out):
    lm = bench_model(model)
    machine = {**machine_info(), "matmul_flops": matmul_peak(),
               "bandwidth_bytes": memory_bandwidth()}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (short, long_):
            text = bench_document(lm.tokenizer, n)
            rec = absorb_arm(lm, text, FULL_SETTINGS, True, Path(tmp) / str(n), 16, machine)
            context = baseline_arms(lm, text, 16, machine)[1]
            records.append({"length": n, **rec, "prefill_s": context.get("prefill_s")})
    ratio = records[1]["absorb_s"] / records[0]["absorb_s"]
    prefill = [r["prefill_s"] for r in records]
    columns = [("tokens", "doc_tokens", "{:,}"), ("absorb s", "absorb_s", "{:.1f}"),
               ("gen s", "gen_s", "{:.1f}"), ("train s", "train_s", "{:.1f}"),
               ("train tok", "train_tokens", "{:,}"), ("steps", "train_steps", "{}"),
               ("in-context prefill s", "prefill_s", "{:.2f}")]
    click.echo(format_table(records, columns))
    click.echo(f"absorb time {long_} / {short}: {ratio:.2f} (length ratio {long_ / short:.0f}; "
               f"target <= 4.6)")
    if None not in prefill:
        click.echo(f"in-context prefill {long_} / {short}: {prefill[1] / prefill[0]:.2f}")
    Path(out).write_text(json.dumps({"model": lm.name, "machine": machine, "records": records,
                                     "ratio": ratio}, indent=1))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
