"""Batched QA generation vs one request per sentence group decoded one at a time.

    python scripts/bench_generation.py [--model cpu-bench] [--tokens 2048] [--requests 32]

Same model, same prompts, same token budget. The batched arm is lift-mlx's `QAStream`
(continuous batching, shared instruction prefix prefilled once); the baseline prefills each
full prompt and decodes it alone with `mlx_lm.stream_generate`. A random model writes no
JSON, so both arms run to the fixed budget (or end-of-turn) and the ratio is requests/s and
generated tokens/s. Prints a table and writes JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from lift_mlx.bench import bench_document, bench_model, format_table, machine_info
from lift_mlx.config import SynthSettings
from lift_mlx.synthesize import QAStream, generator_prompts, task_windows


@click.command()
@click.option("--model", default="cpu-bench", show_default=True)
@click.option("--tokens", default=2048, show_default=True, help="Document length.")
@click.option("--requests", default=32, show_default=True, help="Generator requests.")
@click.option("--max-tokens", default=48, show_default=True, help="Budget per request.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--out", default="bench_generation.json", show_default=True)
def main(model, tokens, requests, max_tokens, batch_size, out):
    from mlx_lm import stream_generate

    lm = bench_model(model)
    text = bench_document(lm.tokenizer, tokens)
    windows = task_windows(text, 2, 2000)[:requests]
    settings = SynthSettings(max_tokens=max_tokens, generator_batch_size=batch_size,
                             qa_per_sentence=1)
    records = []

    start = time.perf_counter()
    stream = QAStream(lm.model, lm.tokenizer, windows, settings, stop_early=False)
    while not stream.done:
        stream.step()
    report = stream.close()
    seconds = time.perf_counter() - start
    records.append({"arm": "batched", "requests": len(windows), "seconds": seconds,
                    "gen_tokens": report.generated_tokens, "prompt_tokens": report.prompt_tokens})

    start = time.perf_counter()
    generated = prompt_tokens = 0
    for ids in generator_prompts(lm.tokenizer, stream.requests, settings, stream.style):
        prompt_tokens += len(ids)
        generated += sum(1 for _ in stream_generate(lm.model, lm.tokenizer, ids,
                                                    max_tokens=max_tokens))
    seconds = time.perf_counter() - start
    records.append({"arm": "one at a time", "requests": len(windows), "seconds": seconds,
                    "gen_tokens": generated, "prompt_tokens": prompt_tokens})

    for r in records:
        r["requests_s"] = r["requests"] / r["seconds"]
        r["gen_tok_s"] = r["gen_tokens"] / r["seconds"]
    ratio = {k: records[0][k] / records[1][k] for k in ("requests_s", "gen_tok_s")}
    columns = [("arm", "arm", "{}"), ("requests", "requests", "{}"),
               ("prompt tok", "prompt_tokens", "{:,}"), ("gen tok", "gen_tokens", "{:,}"),
               ("seconds", "seconds", "{:.1f}"), ("requests/s", "requests_s", "{:.2f}"),
               ("gen tok/s", "gen_tok_s", "{:,.0f}")]
    click.echo(format_table(records, columns))
    click.echo(f"batched / one at a time: {ratio['requests_s']:.2f}x requests/s, "
               f"{ratio['gen_tok_s']:.2f}x generated tokens/s (target >= 4x)")
    Path(out).write_text(json.dumps({"model": lm.name, "machine": machine_info(),
                                     "settings": vars(settings), "records": records,
                                     "ratio": ratio}, indent=1))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
