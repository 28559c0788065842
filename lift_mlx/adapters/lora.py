"""LoRA on every linear layer of every block, the paper's adapter: mlx-lm's layers, stored in
mlx-lm's format, so `mlx_lm.load(model, adapter_path=DIR)` loads a lift-mlx adapter too."""

from __future__ import annotations

import mlx.nn as nn
import mlx.optimizers as optim

from .base import AdapterKind


class LoRA(AdapterKind):
    name = "lora"
    help = "LoRA on every linear layer, in mlx-lm's format"
    order = 0  # the paper's kind and the default: first in lists

    def config(self, model: nn.Module, settings) -> dict:
        return {
            "fine_tune_type": self.name,
            "num_layers": len(model.layers),
            "lora_parameters": {"rank": settings.rank, "scale": settings.scale, "dropout": 0.0},
        }

    def build(self, model: nn.Module, config: dict) -> None:
        # mlx_lm.tuner imports transformers (~1 s): deferred so `lift-mlx --help` stays fast
        from mlx_lm.tuner.utils import linear_to_lora_layers

        linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"],
                              use_dora=config.get("fine_tune_type") == "dora")

    def optimizer(self, settings):
        return optim.AdamW(learning_rate=settings.lr, weight_decay=0.0)

    def remove(self, model: nn.Module) -> None:
        from mlx_lm.tuner.utils import remove_lora_layers  # deferred: see build

        remove_lora_layers(model)

    def base_of(self, module):
        from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear  # deferred: see build
        from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

        if isinstance(module, (LoRALinear, LoRASwitchLinear, DoRALinear)):
            return module.linear
        if isinstance(module, (LoRAEmbedding, DoRAEmbedding)):
            return module.embedding
        return None


KIND = LORA = LoRA()
