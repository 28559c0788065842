"""`lift-mlx bench`: how long absorbing takes, how far that is from the machine's limit, and
what it buys at answer time, per document length.

For each length: absorb with the pipeline and without it (time per stage, time to first
token), answer at once with the plain base (`--now`: from the passages that match the question,
its index built first, and from the bounded head+tail view), and the in-context baseline (the
whole document prefilled, then decoded). The floor (lift-method.md section 4): a frozen-base
LoRA step costs 4N FLOPs per trained token, prefill 2N per prompt token, and a decode step
reads every weight once; MFU = those FLOPs / (time x the matmul peak measured in the run).
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import click
import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.generate import generate_step

from . import backend, store
from .absorb import absorb
from .absorbed import reset_adapter
from .answer import document_prompt, question_prompt, stream_answer
from .config import SETTINGS, AnswerSettings
from .errors import LiftError
from .eval.command import parse_lengths
from .eval.niah import load_haystack
from .flops import best_time, compute_dtype, matmul_peak, parameter_count, training_flops
from .ingest import Document
from .models import LoadedModel, load_model
from .options import setting_option
from .progress import Progress
from .prompts import encode
from .retrieval import passage_index
from .tiny import build_tiny_model, default_corpus

QUESTION = "What is a watermark made of?"
CPU_BENCH_MODEL = "cpu-bench"  # an fp32 llama a CPU trains in minutes; built on first use
# Short QA budget: one or two pairs of JSON fit in 96 tokens and the request stops at "}".
FULL_SETTINGS = dict(max_tokens=96)
QUICK_SETTINGS = dict(seg_len=128, stride=48, context_len=64, rank=8, lr=1e-3, max_tokens=32,
                      grad_checkpoint=False)


def cpu_bench_model() -> Path:
    """4 layers, hidden 256, a 16k window and a tokenizer trained on the shipped haystack."""

    path = store.home() / "models" / CPU_BENCH_MODEL
    if not (path / "config.json").is_file():
        build_tiny_model(path, hidden_size=256, num_layers=4, num_heads=4,
                         intermediate_size=768, vocab_size=2048, max_position_embeddings=16384,
                         corpus=default_corpus() + [load_haystack()])
    return path


def bench_model(name: str) -> LoadedModel:
    return load_model(str(cpu_bench_model()) if name == CPU_BENCH_MODEL else name)


def bench_document(tokenizer, n_tokens: int, text: str | None = None) -> str:
    """About `n_tokens` tokens of `text` (default: the shipped haystack, repeated if short)."""

    text = text or load_haystack()
    ids = encode(tokenizer, text)
    while len(ids) < n_tokens:
        ids = ids + ids
    return tokenizer.decode(ids[:n_tokens])


def machine_info() -> dict:


    device = mx.default_device()
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "mlx": mx.__version__, "mlx_lm": _version("mlx-lm"), "device": str(device)}
    try:
        info.update({k: v for k, v in mx.device_info().items() if isinstance(v, str | int)})
    except Exception:
        pass
    if device.type == mx.DeviceType.cpu:
        info["backend"] = "cpu, BLAS: " + backend.blas.describe()
    else:
        info["backend"] = "cuda" if mx.cuda.is_available() else "metal"
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        info["memory_gb"] = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9,
                                  1)
    info["cpu"] = _cpu_name()
    return info


def _version(package: str) -> str:

    return version(package)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes/s read by a reduction over a large array."""

    x = mx.ones((n_bytes // 4,), dtype=mx.float32)
    mx.eval(x)
    return n_bytes / best_time(lambda: mx.eval(x.sum()), repeats)


def weight_bytes(model) -> int:

    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def decode_speed(model, prompt: list[int], n_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, decode tokens/s after it), eos ignored."""

    start = time.perf_counter()
    first, count = 0.0, 0
    for _ in generate_step(mx.array(prompt), model, max_tokens=n_tokens):
        count += 1
        if count == 1:
            first = time.perf_counter()
    end = time.perf_counter()
    return first - start, (count - 1) / max(end - first, 1e-9)


def first_token_seconds(model, tokenizer, prompt: list[int]) -> float:
    start = time.perf_counter()
    next(iter(stream_answer(model, tokenizer, prompt, max_tokens=2)), None)
    return time.perf_counter() - start


def absorb_arm(lm: LoadedModel, text: str, settings: dict, pipeline: bool, out: Path,
               decode_tokens: int, machine: dict) -> dict:
    """Absorb `text` fresh and time every stage, the first answer token and adapted decoding."""

    # A fresh hash: QA pairs cached by an earlier run (or arm) would skip the generation.
    doc = Document(text=text, sha256=f"bench-{time.time_ns()}", source="bench")
    quiet = Progress(quiet=True, stream=io.StringIO())  # a random model's warnings are noise
    start = time.perf_counter()
    absorbed = absorb(doc, lm, reuse=False, out=out, pipeline=pipeline, preset_name="fast",
                      progress=quiet, **settings)
    absorb_s = time.perf_counter() - start
    ttft_answer = first_token_seconds(lm.model, lm.tokenizer, absorbed.prompt(QUESTION))
    _, decode_tps = decode_speed(lm.model, absorbed.prompt(QUESTION, context=False),
                                 decode_tokens)
    r = absorbed.report
    n, wbytes = parameter_count(lm.model), weight_bytes(lm.model)
    flops = training_flops(n, r.train.tokens) + 2 * n * r.synth.prompt_tokens
    floor_s = flops / machine["matmul_flops"] + r.synth.decode_steps * wbytes / machine[
        "bandwidth_bytes"]
    synth_s = r.seconds.get("synthesize", 0.0)
    train_s = r.seconds.get("train", 0.0)
    return {
        "arm": "pipeline" if pipeline else "sequential",
        "doc_tokens": r.doc_tokens,
        "split_s": r.seconds.get("split", 0.0),
        "gen_requests": r.synth.requests,
        "qa_pairs": r.samples["qa"],
        "gen_tokens": r.synth.generated_tokens,
        "gen_prompt_tokens": r.synth.prompt_tokens,
        "gen_s": synth_s,
        "gen_tok_s": r.synth.generated_tokens / synth_s if synth_s else 0.0,
        "train_steps": r.train.steps,
        "train_tokens": r.train.tokens,
        "train_s": train_s,
        "train_tok_s": r.train.tokens / train_s if train_s else 0.0,
        "traces": r.train.traces,
        "save_s": r.seconds.get("save", 0.0),
        "absorb_s": absorb_s,
        "ttft_s": absorb_s + ttft_answer,
        "decode_tok_s": decode_tps,
        "peak_memory_gb": r.peak_memory,
        "adapter_mb": store.dir_size(absorbed.adapter_path) / 1e6,
        "flops": flops,
        "floor_s": floor_s,
        "mfu": flops / (absorb_s * machine["matmul_flops"]),
    }


def baseline_arms(lm: LoadedModel, text: str, decode_tokens: int, machine: dict) -> list[dict]:
    """`--now` (the plain base answering at once: from the passages that match the question,
    the document's index built first, and from the bounded head+tail view) and the whole
    document in context."""
    reset_adapter(lm)
    tok = lm.tokenizer
    doc_tokens = encode(tok, text)
    out = []
    for arm, retrieve in (("now", True), ("now-view", False)):
        mx.reset_peak_memory()
        start = time.perf_counter()
        answer = AnswerSettings(max_tokens=decode_tokens, retrieve=retrieve)
        index = passage_index(tok, text, answer.passage_len) if retrieve else None
        prompt, _ = document_prompt(tok, QUESTION, doc_tokens, answer, lm.window, index)
        index_s = time.perf_counter() - start
        out.append({"arm": arm, "doc_tokens": len(doc_tokens), "prompt_tokens": len(prompt),
                    "index_s": index_s,
                    "ttft_s": index_s + first_token_seconds(lm.model, tok, prompt),
                    "peak_memory_gb": {"answer": mx.get_peak_memory() / 1e9}})
    full = question_prompt(tok, QUESTION, doc_tokens, 10**9, decode_tokens)
    record = {"arm": "in-context", "doc_tokens": len(doc_tokens), "prompt_tokens": len(full),
              "fits": len(full) + decode_tokens <= lm.window}
    if record["fits"]:
        mx.reset_peak_memory()
        prefill_s, decode_tps = decode_speed(lm.model, full, decode_tokens)
        n = parameter_count(lm.model)
        record.update(prefill_s=prefill_s, ttft_s=prefill_s, decode_tok_s=decode_tps,
                      peak_memory_gb={"answer": mx.get_peak_memory() / 1e9},
                      mfu=2 * n * len(full) / (prefill_s * machine["matmul_flops"]))
    return [*out, record]


def _lengths(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None

    try:
        out = parse_lengths(value)
    except LiftError:
        raise click.BadParameter("use numbers of tokens such as 1k,2k,4k or 512,1024") from None
    if min(out) < 16:
        raise click.BadParameter("give at least one length of 16 tokens or more")
    return out


COLUMNS = [("tokens", "doc_tokens", "{:,}"), ("arm", "arm", "{}"),
           ("absorb s", "absorb_s", "{:.1f}"),
           ("TTFT s", "ttft_s", "{:.2f}"), ("gen req", "gen_requests", "{}"),
           ("qa", "qa_pairs", "{}"), ("gen tok/s", "gen_tok_s", "{:,.0f}"),
           ("steps", "train_steps", "{}"), ("train tok/s", "train_tok_s", "{:,.0f}"),
           ("decode tok/s", "decode_tok_s", "{:,.1f}"), ("MFU", "mfu", "{:.1%}")]


def format_table(records: list[dict], columns=COLUMNS) -> str:
    """A plain-text table; a record without a column shows '-'."""
    rows = [[h for h, _, _ in columns]]
    for r in records:
        rows.append([fmt.format(r[k]) if r.get(k) is not None else "-" for _, k, fmt in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def plot(records: list[dict], path: Path) -> bool:
    """TTFT and decode speed against document length; False when matplotlib is missing."""
    try:
        import matplotlib  # optional (the `plot` extra): without it the table still prints

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # only after use("Agg"): no display needed
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for arm in ("pipeline", "sequential", "now", "now-view", "in-context"):
        pts = [(r["doc_tokens"], r) for r in records if r["arm"] == arm and "ttft_s" in r]
        if pts:
            left.plot([x for x, _ in pts], [r["ttft_s"] for _, r in pts], "o-", label=arm)
        pts = [(x, r) for x, r in pts if r.get("decode_tok_s")]
        if pts:
            right.plot([x for x, _ in pts], [r["decode_tok_s"] for _, r in pts], "o-", label=arm)
    left.set(xlabel="document tokens", ylabel="time to first token (s)", xscale="log")
    right.set(xlabel="document tokens", ylabel="decode tokens/s", xscale="log")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


@click.command()
@click.option("--model", "-m", default=None, metavar="M",
              help=f"Model to measure (alias, folder or hub id); '{CPU_BENCH_MODEL}' builds an "
                   "fp32 4-layer model sized for a CPU. [default: tiny with --quick, else the "
                   "default model]")
@click.option("--lengths", callback=_lengths, default=None, metavar="LIST",
              help="Document lengths in tokens. [default 1k,2k,4k,8k; --quick: 256,512]")
@click.option("--doc", "doc_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Text to cut the documents from. [default: the shipped "
                                 "haystack]")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench.json"), show_default=True, help="JSON file to write.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Plot file. [default: next to --out, when matplotlib is installed]")
@click.option("--quick", is_flag=True, help="Small lengths and budgets on the tiny model: "
                                            "under a minute, for CI.")
@click.option("--answers-only", is_flag=True,
              help="Only the answers the plain base gives at once (--now, from retrieved "
                   "passages and from the view) and the whole document in context: no absorb.")
@setting_option(SETTINGS["adapter"])
def bench(model, lengths, doc_path, out, png, quick, answers_only, train_adapter):
    """Measure absorbing and answering per document length, with and without the pipeline.

    Per length and arm: time of each stage (split, QA generation, training, save), time to
    first token (TTFT, model load excluded), generation and training tokens/s, decode speed of
    the adapted model with a short prompt vs the document in context, peak memory per phase,
    adapter size, and MFU against the matmul peak measured in the same run. Prints a table
    and writes a JSON file (one record per length and arm) and, with matplotlib, a PNG.
    """
    backend.warn_if_slow_blas()
    model = model or ("tiny" if quick else None)
    lengths = lengths or ([256, 512] if quick else [1024, 2048, 4096, 8192])
    settings = {**(QUICK_SETTINGS if quick else FULL_SETTINGS),
                "adapter": train_adapter or SETTINGS["adapter"].default}
    decode_tokens = 16 if quick else 64
    start = time.perf_counter()
    lm = bench_model(model) if model else load_model()
    load_s = time.perf_counter() - start

    dtype = compute_dtype(lm.model)
    machine = machine_info()
    machine["matmul_flops"] = matmul_peak(dtype, 512 if quick else 2048)
    machine["bandwidth_bytes"] = memory_bandwidth(64 * 2**20 if quick else 256 * 2**20)
    source = doc_path.read_text(encoding="utf-8") if doc_path else None
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            text = bench_document(lm.tokenizer, n, source)
            for pipeline in () if answers_only else (False, True):
                rec = absorb_arm(lm, text, settings, pipeline, Path(tmp) / f"{n}-{pipeline}",
                                 decode_tokens, machine)
                records.append({"length": n, **rec})
            records += [{"length": n, **r} for r in baseline_arms(lm, text, decode_tokens,
                                                                  machine)]
            click.echo(f"{n} tokens done ({time.perf_counter() - start:.0f}s)", err=True)
    result = {"model": {"name": lm.name, "parameters": parameter_count(lm.model),
                        "weight_bytes": weight_bytes(lm.model), "window": lm.window,
                        "load_s": load_s},
              "machine": machine, "settings": {"preset": "fast", **settings},
              "records": records}
    out.write_text(json.dumps(result, indent=1))
    click.echo(f"model {lm.name}: {parameter_count(lm.model):,} parameters, loaded in "
               f"{load_s:.1f}s; {machine['backend']}; matmul peak "
               f"{machine['matmul_flops'] / 1e9:,.0f} GFLOP/s")
    click.echo(format_table(records))
    click.echo(f"wrote {out}")
    png = png or out.with_suffix(".png")
    if plot(records, png):
        click.echo(f"wrote {png}")

