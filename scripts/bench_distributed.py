"""One absorb's training on 1 rank and on 2 (mlx.launch, the ring backend over loopback) on
this machine: step time, tokens per second, and the bytes the ranks exchange per step.

    PYTHONPATH=. python scripts/bench_distributed.py [--model cpu-bench] [--steps 10]
        [--repeat 3] [--out docs/bench/bench_distributed.json]

Each rank is pinned to one core with one BLAS thread (so 1 rank uses one core, 2 ranks two);
1 rank runs without a launcher, as a plain absorb does. The same recite samples, settings and
global batch on both; timed from the step after the warm-up to the last, on real tokens.

Exchanged per step: the adapter's gradient (every trainable array, fp32) and the loss, summed
over the ranks in one all_sum each; a ring all-reduce sends 2(n-1)/n of that from every rank.
`exchange ms` times all_sums of that size alone, after training (0 for one rank); `s/step,
rows alone` times each rank's rows of the same batches with no exchange, all ranks at once
(what a step costs before the ranks wait for each other). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from lift_mlx import distributed
from lift_mlx.adapters import LORA
from lift_mlx.bench import (
    CPU_BENCH_MODEL,
    bench_document,
    bench_model,
    cpu_bench_model,
    format_table,
    machine_info,
)
from lift_mlx.config import TrainSettings
from lift_mlx.prompts import encode
from lift_mlx.samples import make_batch, recite_samples
from lift_mlx.train import Trainer, train

ROOT = Path(__file__).resolve().parents[1]
EXCHANGES = 20  # all_sums timed for `exchange ms`
LAUNCH = ([shutil.which("mlx.launch")] if shutil.which("mlx.launch") else
          [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"])


def worker(args) -> None:
    """One rank's run: train, then time the exchange alone; rank 0 prints the record."""
    import mlx.core as mx  # after lift_mlx, which picks the BLAS before mlx.core loads
    from mlx.utils import tree_flatten

    world = distributed.world()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {world.rank % os.cpu_count()})
    lm = bench_model(args.model)
    ids = encode(lm.tokenizer, bench_document(lm.tokenizer, args.tokens))
    samples = recite_samples(lm.tokenizer, ids, args.seg_len, args.seg_len * 3 // 8, 128,
                             random.Random(0))
    settings = TrainSettings(rank=args.rank, batch_size=args.batch_size, grad_checkpoint=False,
                             epochs=1000)
    LORA.attach(lm.model, settings)
    grad_bytes = sum(a.nbytes for _, a in tree_flatten(lm.model.trainable_parameters()))
    stamps = {}

    def clock(step, total, loss, tokens):
        stamps[step] = (time.perf_counter(), tokens)

    train(lm.model, samples, settings, 0, clock, max_steps=args.warmup + args.steps,
          world=world)
    (start, before), (end, after) = stamps[args.warmup], stamps[args.warmup + args.steps]
    compute = compute_only(lm.model, samples, settings, world, args.steps)
    exchange = 0.0
    if world.size > 1:
        payload = mx.zeros((grad_bytes // 4,))
        mx.eval(mx.distributed.all_sum(payload))
        tick = time.perf_counter()
        for _ in range(EXCHANGES):
            mx.eval(mx.distributed.all_sum(payload))
        exchange = (time.perf_counter() - tick) / EXCHANGES
    if world.rank == 0:
        seconds = end - start
        print(json.dumps({
            "ranks": world.size, "steps": args.steps, "tokens": after - before,
            "seconds": seconds, "step_s": seconds / args.steps, "tok_s": (after - before) / seconds,
            "grad_mb": grad_bytes / 1e6, "loss_bytes": 4,
            "sent_mb": 2 * (world.size - 1) / world.size * (grad_bytes + 4) / 1e6,
            "exchange_ms": exchange * 1e3, "compute_s": compute, "samples": len(samples),
            "sample_tokens": len(samples[0])}))


def compute_only(model, samples, settings, world, steps: int) -> float:
    """Seconds per step of this rank's rows of the same batches alone (no exchange), every
    rank at once: what the step costs before the ranks wait for each other."""
    import mlx.core as mx  # see worker

    size, length = settings.batch_size, max(len(s) for s in samples) - 1
    starts = [k * size % (len(samples) - size + 1) for k in range(steps + 1)]
    batches = [world.share(make_batch(samples[i:i + size], size, length, 0)) for i in starts]
    trainer = Trainer(model, settings)  # this process alone
    trainer.step(batches[0])
    mx.eval(world.sum(mx.zeros(1)))  # start together
    tick = time.perf_counter()
    for batch in batches[1:]:
        trainer.step(batch)
    return (time.perf_counter() - tick) / steps


def free_port(ranks: int) -> int:
    """A port from which `ranks` ports in a row are free on loopback (the ring listens on one
    per rank)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + ranks >= 65536:
            continue
        try:
            for p in range(port, port + ranks):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free ports")


def run(ranks: int, worker_args: list[str]) -> dict:
    command = [sys.executable, __file__, "--worker", *worker_args]
    if ranks > 1:
        command = [*LAUNCH, "-n", str(ranks), "--backend", "ring", "--starting-port",
                   str(free_port(ranks)), "--", *command]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                          stdin=subprocess.PIPE, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{ranks} ranks: no result\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=CPU_BENCH_MODEL)
    parser.add_argument("--tokens", type=int, default=4096, help="document length")
    parser.add_argument("--seg-len", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--batch-size", type=int, default=4, help="the global batch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each rank count")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench/bench_distributed.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.model == CPU_BENCH_MODEL:
        cpu_bench_model()  # built once here, not by every rank at the same time
    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
              if k not in ("ranks", "repeat", "out", "worker")]
    # alternated, so that a change in the machine's other load reaches every arm alike
    records = [{"run": k + 1, **run(int(n), passed)} for k in range(args.repeat)
               for n in args.ranks.split(",")]
    columns = [("run", "run", "{}"), ("ranks", "ranks", "{}"), ("steps", "steps", "{}"),
               ("s/step", "step_s", "{:.3f}"),
               ("tok/s", "tok_s", "{:,.0f}"), ("grad MB/step", "grad_mb", "{:.3f}"),
               ("sent MB/rank/step", "sent_mb", "{:.3f}"),
               ("exchange ms", "exchange_ms", "{:.2f}"),
               ("s/step, rows alone", "compute_s", "{:.3f}")]
    print(f"{args.model}: {records[0]['samples']} recite samples of "
          f"{records[0]['sample_tokens']} tokens, LoRA rank {args.rank}, global batch "
          f"{args.batch_size}; each rank one core, one BLAS thread")
    print(format_table(records, columns))
    counts = [int(n) for n in args.ranks.split(",")]
    by_count = {n: [r["tok_s"] for r in records if r["ranks"] == n] for n in counts}
    for n in counts[1:]:
        ratios = [a / b for a, b in zip(by_count[n], by_count[counts[0]])]
        print(f"{n} ranks: {min(ratios):.2f}-{max(ratios):.2f}x the tokens/s of {counts[0]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "scripts/bench_distributed.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker")},
        "records": records}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
