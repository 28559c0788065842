"""Gated Memory, the attention adapter of the LIFT paper's earlier versions: a layer on the
attention of every block (lift-method.md, section 3), plus the paper's rank-2 LoRA on each
output projection, trained with the paper's optimizer. For each head, on the query q before
the rotary embedding:

    mem   = W2 · silu(W1 · q)                     # d -> 2d -> d
    g     = sigmoid(3 · (w3 · silu(W4 · q) - 1))  # d -> floor(sqrt(d)) -> 1
    out_h = (1 - g) · attn_h + g · mem            # then the output projection, o_proj

The layer runs the wrapped module's own projections, rotary embedding and KV cache, and
mlx-lm's `scaled_dot_product_attention`, in the order mlx-lm's llama and qwen2 attention do;
each MLP is one array per layer shaped [heads, in, out], so all heads are one batched matmul.

Saved as adapters.safetensors (the trainable arrays, by parameter path) and adapter_config.json
("fine_tune_type": "gated", the layer count, the o_proj LoRA's rank and scale, the seed of the
starting weights). mlx-lm's own loader does not know this kind: load it with lift-mlx.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from ..errors import LiftError
from ..prompts import encode
from .base import AdapterKind

BETAS = (0.9, 0.98)  # paper: AdamW betas for Gated Memory
WEIGHT_DECAY = 1e-4  # paper
PAPER_LR = 1e-3  # paper; replaces LoRA's --lr default unless --lr is given (config.preset)
# A fixed general text: where a trained gate should stay near its start (`lift-mlx info`).
GENERAL_PROBE = (
    "The water cycle moves water between the oceans, the air and the land. The sun warms the "
    "sea, water evaporates, rises and cools into clouds, and falls again as rain or snow. "
    "Rivers carry it back to the sea, and the cycle begins again."
)
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
        self.on_gate = None  # called with each gate array computed (`mean_gates`)

    def memory(self, queries: mx.array) -> tuple[mx.array, mx.array]:
        """The memory's output [B, heads, L, d] and the gate [B, heads, L, 1] for the
        pre-rotary `queries` [B, heads, L, d]."""
        q = queries.astype(self.w1.dtype)
        mem = nn.silu(q @ self.w1) @ self.w2
        gate = mx.sigmoid(SHARPNESS * (nn.silu(q @ self.w4) @ self.w3 - 1))
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
        # mlx_lm imports transformers (~1 s): deferred so `lift-mlx --help` stays fast
        from mlx_lm.models.base import scaled_dot_product_attention

        attn = scaled_dot_product_attention(queries, keys, values, cache=cache, scale=a.scale,
                                            mask=mask)
        mixed = ((1 - gate) * attn + gate * mem).astype(attn.dtype)
        mixed = mixed.transpose(0, 2, 1, 3).reshape(B, L, -1)
        out = a.o_proj(mixed)
        if "o_a" in self:
            out = out + (self.o_scale * ((mixed @ self.o_a) @ self.o_b)).astype(out.dtype)
        return out


class GatedMemory(AdapterKind):
    """Gated Memory on the attention of every block (the adapter kind called "gated")."""

    name = "gated"
    help = "Gated Memory on every attention layer, which only lift-mlx loads"
    defaults = {"lr": PAPER_LR}  # settings this kind trains with unless an option says else
    order = 1

    def config(self, model: nn.Module, settings) -> dict:
        return {
            "fine_tune_type": self.name,
            "num_layers": len(model.layers),
            "o_proj_rank": settings.o_proj_rank,
            "o_proj_scale": settings.scale,
            "seed": settings.seed,  # with the model, it fixes the starting weights
        }

    def build(self, model: nn.Module, config: dict) -> None:
        """Wrap every block's attention as `config` says, with the starting weights."""
        layers = model.layers
        if config["num_layers"] != len(layers):
            raise LiftError(f"this Gated Memory adapter has {config['num_layers']} layers and "
                            f"the model {len(layers)}: it was made for another base model")
        families = {type(layer.self_attn).__module__ for layer in layers}
        if not families <= set(FAMILIES):
            raise LiftError("Gated Memory wraps the attention of mlx-lm's llama and qwen2 "
                            f"models, not {', '.join(sorted(families))}'s; use --adapter lora")
        keys = mx.random.split(mx.random.key(config["seed"]), len(layers))
        for layer, key in zip(layers, keys):
            attention = layer.self_attn
            head_dim = getattr(attention, "head_dim", None) or (
                model.args.hidden_size // attention.n_heads)
            layer.self_attn = GatedAttention(attention, head_dim, model.args.hidden_size, key,
                                             config["o_proj_rank"], config["o_proj_scale"])

    def optimizer(self, settings):
        return optim.AdamW(learning_rate=settings.lr, betas=list(BETAS),
                           weight_decay=WEIGHT_DECAY)

    def remove(self, model: nn.Module) -> None:
        for layer in getattr(model, "layers", []):
            if (base := self.base_of(layer.self_attn)) is not None:
                layer.self_attn = base

    def base_of(self, module):
        return module.attention if isinstance(module, GatedAttention) else None

    def probe(self, model: nn.Module, tokenizer, document: str,
              tokens: int = 512) -> dict[str, list[float]]:
        """The mean gate of each layer on the first `tokens` tokens of `document`, where a
        trained memory opens it, and on GENERAL_PROBE, where it should stay near sigmoid(-3)."""
        return {"document": mean_gates(model, encode(tokenizer, document)[:tokens]),
                "general": mean_gates(model, encode(tokenizer, GENERAL_PROBE))}


KIND = GATED = GatedMemory()


def gated_layers(model: nn.Module) -> list[GatedAttention]:
    """The model's GatedAttention modules, first block first."""
    return [layer.self_attn for layer in getattr(model, "layers", [])
            if isinstance(layer.self_attn, GatedAttention)]


def gate_values(model: nn.Module, tokens: list[int]) -> mx.array:
    """Every gated layer's gate on `tokens`, as one array [layers, heads, tokens]."""
    layers = gated_layers(model)
    seen: list = []
    for attention in layers:
        attention.on_gate = seen.append
    try:
        mx.eval(model(mx.array([tokens])))
    finally:
        for attention in layers:
            attention.on_gate = None
    return mx.stack([gate[0, :, :, 0] for gate in seen])


def mean_gates(model: nn.Module, tokens: list[int]) -> list[float]:
    """The mean gate value (over heads and tokens) of each gated layer on `tokens`."""
    return gate_values(model, tokens).mean(axis=(1, 2)).tolist()
