"""The Gated Memory layer: an mlx-lm attention module with, per head, a memory MLP on the query
before the rotary embedding and a gate that mixes the memory's output into the head's attention
output, token by token (lift-method.md, section 3; the adapter kind is in gated.py):

    mem   = W2 · silu(W1 · q)                     # d -> 2d -> d
    g     = sigmoid(3 · (w3 · silu(W4 · q) - 1))  # d -> floor(sqrt(d)) -> 1
    out_h = (1 - g) · attn_h + g · mem            # then the output projection, o_proj

It runs the wrapped module's own projections, rotary embedding and KV cache, and mlx-lm's
`scaled_dot_product_attention`, in the order mlx-lm's llama and qwen2 attention do; each MLP is
one array per layer shaped [heads, in, out], so all heads are one batched matmul.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import scaled_dot_product_attention

# The attention classes whose call GatedAttention repeats step by step (the two are the same).
FAMILIES = ("mlx_lm.models.llama", "mlx_lm.models.qwen2")
SHARPNESS = 3.0  # g = sigmoid(3 (x - 1)): the paper's; x = 0 gives sigmoid(-3) ~ 0.047


class GatedAttention(nn.Module):
    """An mlx-lm attention module (`attention`, frozen) with a Gated Memory on its heads.

    At the start the memory answers 0 (W2 = 0) and the gate is sigmoid(-3) ~ 0.047 everywhere
    (w3 = 0), so a fresh adapter only damps each head's attention by 4.7%; W1 and W4 start
    random, from `key`, as mlx's Linear layers do.
    """

    def __init__(self, attention: nn.Module, head_dim: int, dim: int, key: mx.array,
                 o_rank: int = 0, o_scale: float = 1.0):
        super().__init__()
        self.attention = attention
        heads, d = attention.n_heads, head_dim
        k1, k4, ko = mx.random.split(key, 3)
        bound = 1 / math.sqrt(d)
        self.w1 = mx.random.uniform(-bound, bound, (heads, d, 2 * d), key=k1)
        self.w2 = mx.zeros((heads, 2 * d, d))
        self.w4 = mx.random.uniform(-bound, bound, (heads, d, math.isqrt(d)), key=k4)
        self.w3 = mx.zeros((heads, math.isqrt(d), 1))
        if o_rank:  # as mlx-lm's LoRALinear starts: A random, B zero
            bound = 1 / math.sqrt(heads * d)
            self.o_a = mx.random.uniform(-bound, bound, (heads * d, o_rank), key=ko)
            self.o_b = mx.zeros((o_rank, dim))
        self.o_scale = o_scale
        self.forced_gate: float | None = None  # a fixed gate value instead of the MLP's (tests)
        self.on_gate = None  # called with each gate array computed (`mean_gates`)

    def memory(self, queries: mx.array) -> tuple[mx.array, mx.array]:
        """The memory's output [B, heads, L, d] and the gate [B, heads, L, 1] for the
        pre-rotary `queries` [B, heads, L, d]."""
        q = queries.astype(self.w1.dtype)
        mem = nn.silu(q @ self.w1) @ self.w2
        gate = mx.sigmoid(SHARPNESS * (nn.silu(q @ self.w4) @ self.w3 - 1))
        if self.forced_gate is not None:
            gate = mx.full(gate.shape, self.forced_gate, gate.dtype)
        if self.on_gate is not None:
            self.on_gate(gate)
        return mem, gate

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        a = self.attention
        B, L, _ = x.shape
        queries, keys, values = a.q_proj(x), a.k_proj(x), a.v_proj(x)
        queries = queries.reshape(B, L, a.n_heads, -1).transpose(0, 2, 1, 3)
        keys = keys.reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
        values = values.reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
        mem, gate = self.memory(queries)  # the query before the rotary embedding
        if cache is not None:
            queries = a.rope(queries, offset=cache.offset)
            keys = a.rope(keys, offset=cache.offset)
            keys, values = cache.update_and_fetch(keys, values)
        else:
            queries = a.rope(queries)
            keys = a.rope(keys)
        attn = scaled_dot_product_attention(queries, keys, values, cache=cache, scale=a.scale,
                                            mask=mask)
        mixed = ((1 - gate) * attn + gate * mem).astype(attn.dtype)
        mixed = mixed.transpose(0, 2, 1, 3).reshape(B, L, -1)
        out = a.o_proj(mixed)
        if "o_a" in self:
            out = out + (self.o_scale * ((mixed @ self.o_a) @ self.o_b)).astype(out.dtype)
        return out
