"""`lift-mlx doctor`: what this machine gives lift-mlx (backend, BLAS, matmul rate, memory, the
store), and what would make the demo slow or fail, each with its fix."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import click
import mlx.core as mx

from . import backend, store
from .gguf_import import default_quantized, imported_path
from .presets import presets

PROBE_SECONDS = 1.0  # the matmul probe's length: enough for a steady best-of rate
PROBE_SIZE = 1024  # fp32 square matmul, 2.1 GFLOP: BLAS-bound on every backend
DEMO_MODEL = "smollm2"
MIN_FREE_GB = 1.0  # the demo keeps a 93 MB GGUF and its ~0.6 GB fp32 import
MIN_MEMORY_GB = 2.0  # SmolLM2-135M trains in under 1 GB; the rest is the system's


@dataclass
class Problem:
    problem: str
    fix: str


@dataclass
class Report:
    platform: str
    python: str
    mlx: str
    backend: str  # "metal", "cuda" or "cpu"
    blas: str
    blas_path: str | None
    matmul_gflops: float
    memory_gb: float | None
    recommended_model: str
    recommended_why: str
    home: str
    home_bytes: int
    adapters: int
    adapters_bytes: int
    models_bytes: int
    smollm2: str  # "imported", "downloaded" (not yet imported) or "not fetched"
    smollm2_path: str
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0


def device_kind() -> str:
    """The backend MLX computes on by default: "metal", "cuda" or "cpu"."""
    if mx.default_device().type == mx.DeviceType.cpu:
        return "cpu"
    return "cuda" if mx.cuda.is_available() else "metal"


def matmul_gflops(seconds: float = PROBE_SECONDS, n: int = PROBE_SIZE) -> float:
    """The best fp32 n x n matmul rate, in GFLOP/s, over about `seconds` after one warm-up."""
    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a @ b)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tick = time.perf_counter()
        mx.eval(a @ b)
        best = max(best, 2 * n**3 / (time.perf_counter() - tick) / 1e9)
    return best


def memory_gb() -> float | None:
    size = mx.device_info().get("memory_size")
    if not size:
        try:
            size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return size / 2**30


def _gb_for(text: str) -> float:
    """The memory from which a presets.json `mac_memory` recommends its model: "8 GB" -> 8,
    "32 GB+" -> 32, "16-24 GB" -> 24 (it fits in 16, next to the 16 GB model), "any" -> 0."""
    digits = text.split()[0].split("-")[-1].rstrip("+")
    return float(digits) if digits.replace(".", "").isdigit() else 0.0


def recommended_model(kind: str, memory: float | None) -> tuple[str, str]:
    """The model alias to use here, and why."""
    if kind == "cpu":
        return DEMO_MODEL, ("on the CPU, 4-bit matmuls are slow and models run in fp32; "
                            "larger aliases take hours to absorb")
    models = presets()["models"]
    fitting = [(_gb_for(m.get("mac_memory", "any")), name) for name, m in models.items()
               if "hub_id" in m and _gb_for(m.get("mac_memory", "any")) <= (memory or 0)]
    if not fitting:
        return DEMO_MODEL, "less memory than the smallest hub model's"
    need, name = max(fitting, key=lambda f: f[0])  # max keeps the first of equals
    return name, f"the largest preset for {need:g} GB or more"


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def _smollm2() -> tuple[str, Path]:
    spec = presets()["models"][DEMO_MODEL]["wheel"]
    folder = imported_path(spec["gguf_sha256"], default_quantized())
    if (folder / "config.json").is_file():
        return "imported", folder
    gguf = store.models_dir() / "downloads" / Path(spec["member"]).name
    return ("downloaded", gguf) if gguf.is_file() else ("not fetched", gguf)


def problems(report: Report) -> list[Problem]:
    """What would make the demo slow or fail here, each with its fix."""
    found = []
    if report.backend == "cpu" and backend.blas.source is None and sys.platform != "darwin":
        found.append(Problem(f"MLX's CPU backend uses its {backend.blas.describe()}: matmuls about "
                             f"{backend.SLOWDOWN} slower (the demo: ~30 min, not ~3)",
                             backend.fix_command()))
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "")
    if backend.blas.source is not None and threads.isdigit() and int(threads) < 2:
        found.append(Problem(f"OPENBLAS_NUM_THREADS={threads}: one thread is barely faster "
                             "than the reference BLAS", "unset OPENBLAS_NUM_THREADS"))
    if report.smollm2 == "not fetched" and find_spec("pip") is None:
        found.append(Problem("the demo fetches SmolLM2 with pip, which this Python lacks",
                             f"{sys.executable} -m ensurepip"))
    home = Path(report.home)
    existing = next(p for p in (home, *home.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**30
    if free < MIN_FREE_GB:
        found.append(Problem(f"{free:.1f} GB free under {home}; the demo needs about "
                             f"{MIN_FREE_GB:g} GB", "free space, or set LIFT_MLX_HOME to a "
                             "larger disk"))
    if report.memory_gb is not None and report.memory_gb < MIN_MEMORY_GB:
        found.append(Problem(f"{report.memory_gb:.1f} GB of memory", "close other programs; "
                             f"the demo needs about {MIN_MEMORY_GB:g} GB"))
    return found


def diagnose(probe_seconds: float = PROBE_SECONDS) -> Report:
    """Everything `lift-mlx doctor` reports, measured now."""
    start = time.perf_counter()
    kind = device_kind()
    memory = memory_gb()
    model, why = recommended_model(kind, memory)
    status, smollm2_path = _smollm2()
    adapters = store.adapters_dir()
    blas = {"metal": ("Accelerate", None), "cuda": ("cuBLAS", None)}.get(
        kind, (backend.blas.name, backend.blas.path))
    try:
        mlx_version = version("mlx")
    except PackageNotFoundError:
        mlx_version = mx.__version__
    report = Report(
        platform=f"{platform.system()} {platform.machine()}", python=platform.python_version(),
        mlx=mlx_version, backend=kind, blas=blas[0], blas_path=blas[1],
        matmul_gflops=round(matmul_gflops(probe_seconds), 1),
        memory_gb=None if memory is None else round(memory, 1),
        recommended_model=model, recommended_why=why,
        home=str(store.home()), home_bytes=_tree_bytes(store.home()),
        adapters=len([d for d in adapters.iterdir() if d.is_dir()]) if adapters.is_dir() else 0,
        adapters_bytes=_tree_bytes(adapters), models_bytes=_tree_bytes(store.models_dir()),
        smollm2=status, smollm2_path=str(smollm2_path),
    )
    report.problems = problems(report)
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def _mb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def format_report(r: Report) -> str:
    blas = r.blas + (f" ({r.blas_path})" if r.blas_path else "")
    memory = "unknown" if r.memory_gb is None else f"{r.memory_gb:g} GB"
    lines = [
        f"platform   {r.platform}, Python {r.python}, MLX {r.mlx}",
        f"backend    {r.backend.upper() if r.backend != 'metal' else 'Metal'}; BLAS: {blas}",
        f"matmul     {r.matmul_gflops:g} GFLOP/s (fp32 {PROBE_SIZE}x{PROBE_SIZE})",
        f"memory     {memory}; recommended model: {r.recommended_model} ({r.recommended_why})",
        f"store      {r.home}: {_mb(r.home_bytes)} (adapters: {r.adapters}, "
        f"{_mb(r.adapters_bytes)}; models: {_mb(r.models_bytes)})",
        f"{DEMO_MODEL:<10} {r.smollm2}: {r.smollm2_path}"
        + (" (the demo fetches 93 MB with pip once)" if r.smollm2 == "not fetched" else ""),
    ]
    lines += [f"problem    {p.problem}\n  fix:     {p.fix}" for p in r.problems] or [
        "problems   none: `lift-mlx demo` should take about 3 minutes on 2 CPU cores"
        if r.backend == "cpu" else "problems   none"]
    return "\n".join(lines)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Check this machine for lift-mlx: backend, BLAS, matmul rate, memory, caches, problems.

    \b
    Reports the platform and the MLX backend (Metal, CUDA or CPU), the BLAS MLX's CPU
    backend uses, a measured fp32 matmul rate (a one-second probe), memory and the model
    alias recommended for it, the store under $LIFT_MLX_HOME with its sizes, whether the
    demo's SmolLM2 is fetched and imported, and anything that would make `lift-mlx demo`
    slow or fail, each with the command that fixes it. Takes a few seconds.
    """
    report = diagnose()
    click.echo(json.dumps(asdict(report), indent=1) if as_json else format_report(report))
