"""What training costs in FLOPs and how fast this machine multiplies matrices: the measure of
MFU (model FLOPs utilisation) that every absorb reports and the bench tabulates."""

from __future__ import annotations

import functools
import time

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.utils import get_total_parameters

# An absorb measures the peak once per process on matrices this size: about 0.1 s on the
# 2-core CPU, against the bench's 2048 (a few seconds with its repeats)
ABSORB_PEAK_N = 1024


def best_time(fn, repeats: int) -> float:
    """The fastest of `repeats` runs of `fn`, after one to warm up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype=None, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul (float32 unless `dtype`), the best of a few runs."""
    dtype = dtype or mx.float32
    a, b = mx.random.normal((n, n)).astype(dtype), mx.random.normal((n, n)).astype(dtype)
    mx.eval(a, b)
    return 2 * n**3 / best_time(lambda: mx.eval(a @ b), repeats)


@functools.cache
def absorb_peak(dtype) -> float:
    """matmul_peak at ABSORB_PEAK_N, measured once per process and dtype."""
    return matmul_peak(dtype, ABSORB_PEAK_N, 3)


def compute_dtype(model):
    """The floating dtype the model's weights hold, the one it computes in (a 4-bit base: its
    scales' dtype)."""
    return next((v.dtype for _, v in tree_flatten(model.parameters())
                 if mx.issubdtype(v.dtype, mx.floating)), mx.float32)


def parameter_count(model) -> int:
    """Parameters of the model as trained, counting each packed 4/8-bit weight as the values
    it holds (mlx-lm's count), so FLOPs and MFU are right for quantized bases too."""
    return get_total_parameters(model)


def training_flops(parameters: int, tokens: int) -> float:
    """A training pass over `tokens` tokens: 2N per token forward and 2N backward to the
    activations (the frozen base needs no weight gradients; the adapter's are a rounding
    error), as the bench counts it."""
    return 4 * parameters * tokens
