"""fp32 matmul rate of MLX's CPU backend with each BLAS lift_mlx/backend.py can load: the
reference BLAS MLX bundles (LIFT_MLX_OPENBLAS=0), the system's OpenBLAS, the cmeel-openblas
wheel's (LIFT_MLX_OPENBLAS=pip), and any library given with --library. Each runs in its own
process (MLX binds its BLAS once); prints a table, writes JSON.

    python scripts/bench_blas.py --repeat 5 --out blas.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1024, 2048)
CHOICES = {"reference": "0", "system": "", "pip": "pip"}
# In a fresh process: the BLAS loaded, then per size the best rate of `repeat` timed matmuls
# after a warm-up, and whether the product matches numpy's.
PROBE = """if True:
    import json, sys, time
    import numpy as np
    from lift_mlx import backend
    import mlx.core as mx
    sizes, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
    out = {"blas": backend.blas.describe(), "source": backend.blas.source, "gflops": {}}
    for n in sizes:
        a = np.random.default_rng(n).standard_normal((n, n)).astype(np.float32)
        x = mx.array(a)
        mx.eval(x @ x)
        best = 0.0
        for _ in range(repeat):
            tick = time.perf_counter()
            mx.eval(x @ x)
            best = max(best, 2 * n**3 / (time.perf_counter() - tick) / 1e9)
        out["gflops"][n] = round(best, 1)
        out[f"allclose_{n}"] = bool(np.allclose(np.array(x @ x), a @ a, rtol=1e-4, atol=1e-2))
    print(json.dumps(out))
"""


def measure(choice: str, repeat: int) -> dict:
    env = {**os.environ, "LIFT_MLX_OPENBLAS": choice, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(SIZES), str(repeat)],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed matmuls per size")
    parser.add_argument("--library", action="append", default=[],
                        help="another libopenblas.so-like library to measure (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("blas.json"))
    args = parser.parse_args()
    arms = {**CHOICES, **{Path(p).name: p for p in args.library}}
    rows = {name: measure(choice, args.repeat) for name, choice in arms.items()}
    print(f"{'arm':<12} " + " ".join(f"{n:>8}" for n in SIZES) + "  GFLOP/s  BLAS")
    for name, r in rows.items():
        rates = " ".join(f"{r['gflops'][str(n)]:>8.1f}" for n in SIZES)
        same = all(r[f"allclose_{n}"] for n in SIZES)
        print(f"{name:<12} {rates}  {'same' if same else 'DIFFERS'}  {r['blas']}")
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
