"""Platform-specific set-up, kept in one place.

MLX's Linux CPU wheel ships a reference BLAS: fp32 matmuls run ~40x slower than with an
optimised one. When an OpenBLAS library with plain symbol names is on the machine (Debian:
``apt-get install libopenblas0-pthread``), loading it globally *before* ``mlx.core`` makes MLX
resolve its BLAS calls there, with identical results. This is optional: without the library
everything still runs, only slower. On macOS MLX uses Accelerate and Metal, and nothing is done.

Set ``LIFT_MLX_OPENBLAS=0`` to skip it, or to a path to load a specific library.
"""

from __future__ import annotations

import ctypes
import os
import sys

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)

openblas_path: str | None = None


def _load_openblas() -> str | None:
    choice = os.environ.get("LIFT_MLX_OPENBLAS", "")
    if choice == "0" or not sys.platform.startswith("linux"):
        return None
    if "mlx.core" in sys.modules:  # too late: MLX already bound its BLAS symbols
        return None
    # OpenBLAS needs at least two threads to beat the reference BLAS by the margin quoted above.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(2, os.cpu_count() or 2)))
    for path in ([choice] if choice else []) + list(_CANDIDATES):
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return path
            except OSError:
                continue
    return None


openblas_path = _load_openblas()


def use_recommended_wired_limit() -> int | None:
    """On Metal, let MLX keep up to the device's recommended working set wired, so a large
    model's weights are not paged out while absorbing or answering (mlx-lm does the same for
    generation). Returns the previous limit; None, doing nothing, where the device recommends
    no size (the CPU)."""
    # mlx_lm imports transformers (~1 s); the CLI imports this module for every command
    from mlx_lm.utils import maybe_set_recommended_wired_limit

    return maybe_set_recommended_wired_limit()
