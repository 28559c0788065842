"""Gated Memory, the attention adapter of the LIFT paper's earlier versions, as the adapter kind
"gated": its layer (gated_attention.py) on the attention of every block, plus the paper's rank-2
LoRA on each output projection, trained with the paper's optimizer.

Saved as adapters.safetensors (the trainable arrays, by parameter path) and adapter_config.json
("fine_tune_type": "gated", the layer count, the o_proj LoRA's rank and scale, the seed of the
starting weights). mlx-lm's own loader does not know this kind: load it with lift-mlx.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import store
from .errors import LiftError

BETAS = (0.9, 0.98)  # paper: AdamW betas for Gated Memory
WEIGHT_DECAY = 1e-4  # paper
PAPER_LR = 1e-3  # paper; replaces LoRA's --lr default unless --lr is given (config.preset)
# A fixed general text: where a trained gate should stay near its start (`lift-mlx info`).
GENERAL_PROBE = (
    "The water cycle moves water between the oceans, the air and the land. The sun warms the "
    "sea, water evaporates, rises and cools into clouds, and falls again as rain or snow. "
    "Rivers carry it back to the sea, and the cycle begins again."
)


class GatedMemory:
    """Gated Memory on the attention of every block (the `AdapterKind` called "gated")."""

    name = "gated"
    defaults = {"lr": PAPER_LR}  # settings this kind trains with unless an option says else

    def attach(self, model, settings) -> dict:
        config = {
            "fine_tune_type": self.name,
            "num_layers": len(model.layers),
            "o_proj_rank": settings.o_proj_rank,
            "o_proj_scale": settings.scale,
            "seed": settings.seed,  # with the model, it fixes the starting weights
        }
        model.freeze()
        self.build(model, config)
        return config

    def build(self, model, config: dict) -> None:
        """Wrap every block's attention as `config` says, with the starting weights."""
        import mlx.core as mx

        from .gated_attention import FAMILIES, GatedAttention

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

    def trainable(self, model) -> dict:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(model.trainable_parameters()))

    def optimizer(self, settings):
        import mlx.optimizers as optim

        return optim.AdamW(learning_rate=settings.lr, betas=list(BETAS),
                           weight_decay=WEIGHT_DECAY)

    def save(self, model, config: dict, folder: Path) -> None:
        import mlx.core as mx

        mx.save_safetensors(str(Path(folder) / store.ADAPTER_FILE), self.trainable(model))
        (Path(folder) / store.CONFIG_FILE).write_text(json.dumps(config, indent=2))

    def load(self, model, folder: Path) -> None:
        import mlx.core as mx

        config = json.loads((Path(folder) / store.CONFIG_FILE).read_text())
        weights = mx.load(str(Path(folder) / store.ADAPTER_FILE))
        model.freeze()
        self.build(model, config)
        expected = {k: v.shape for k, v in self.trainable(model).items()}
        if {k: v.shape for k, v in weights.items()} != expected:
            self.remove(model)
            raise LiftError(f"the Gated Memory adapter {folder} does not fit this model's "
                            "attention; it was made for another base model")
        model.load_weights(list(weights.items()), strict=False)

    def remove(self, model) -> None:
        for layer in getattr(model, "layers", []):
            if (base := self.base_of(layer.self_attn)) is not None:
                layer.self_attn = base

    def base_of(self, module):
        from .gated_attention import GatedAttention

        return module.attention if isinstance(module, GatedAttention) else None


GATED = GatedMemory()


def gated_layers(model) -> list:
    """The model's GatedAttention modules, first block first."""
    return [layer.self_attn for layer in getattr(model, "layers", [])
            if GATED.base_of(layer.self_attn) is not None]


def gate_values(model, tokens: list[int]):
    """Every gated layer's gate on `tokens`, as one array [layers, heads, tokens]."""
    import mlx.core as mx

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


def mean_gates(model, tokens: list[int]) -> list[float]:
    """The mean gate value (over heads and tokens) of each gated layer on `tokens`."""
    return gate_values(model, tokens).mean(axis=(1, 2)).tolist()


def probe_gates(model, tokenizer, document: str, tokens: int = 512) -> dict[str, list[float]]:
    """The mean gate of each layer on the first `tokens` tokens of `document`, where a trained
    memory opens it, and on GENERAL_PROBE, where it should stay near sigmoid(-3)."""
    from .prompts import encode

    return {"document": mean_gates(model, encode(tokenizer, document)[:tokens]),
            "general": mean_gates(model, encode(tokenizer, GENERAL_PROBE))}
