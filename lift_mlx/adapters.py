"""Adapter kinds: the trainable layers an absorb puts on the frozen base, and how an adapter
folder stores them, one `AdapterKind` each, picked by name (`--adapter`).

- `lora`: LoRA on every linear layer of every block (the paper's choice), with mlx-lm's
  layers and in mlx-lm's format, so `mlx_lm.load(model, adapter_path=DIR)` loads it too.
- `gated`: Gated Memory (gated.py), the attention adapter of the paper's earlier versions, in
  a format of its own that only lift-mlx loads.

A stored adapter names its kind in adapter_config.json's `fine_tune_type` (as mlx-lm's do);
one that names none is LoRA. Adding a kind: a module with an object that has the methods of
`AdapterKind` (it needs to import nothing from here), added to `ADAPTER_KINDS`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Protocol

from . import store
from .errors import LiftError
from .gated import GATED


class AdapterKind(Protocol):
    """What training, the store and answering need of an adapter kind.

    A kind puts its layers in by replacing modules of the model tree (as LoRA wraps each
    linear layer) and says which module each of them replaced (`base_of`), so a `base_view`
    is the plain base, taken before the layers are attached or after.
    """

    name: str  # its adapter_config.json's "fine_tune_type"
    defaults: dict  # flat settings it trains with unless an option sets them (config.preset)

    def attach(self, model, settings) -> dict:
        """Freeze the base and add the kind's trainable layers (`settings`: TrainSettings);
        the adapter_config.json that rebuilds them."""

    def trainable(self, model) -> dict:
        """The arrays training updates, by parameter path (what a checkpoint keeps)."""

    def optimizer(self, settings):
        """The optimizer that trains its arrays (`settings`: TrainSettings)."""

    def save(self, model, config: dict, folder: Path) -> None:
        """Write the adapter's files (`store.ADAPTER_FILE`, `store.CONFIG_FILE`) in `folder`."""

    def load(self, model, folder: Path) -> None:
        """Rebuild the layers `folder`'s config describes on the plain base, with its weights."""

    def remove(self, model) -> None:
        """Take the kind's layers off the model (nothing happens where it has none)."""

    def base_of(self, module):
        """The module that `module`, one of the kind's layers, replaced; None for others."""


class LoRA:
    """mlx-lm's LoRA layers on every linear layer of every block."""

    name = "lora"
    defaults: dict = {}

    def attach(self, model, settings) -> dict:
        import mlx.core as mx
        from mlx_lm.tuner.utils import linear_to_lora_layers

        config = {
            "fine_tune_type": self.name,
            "num_layers": len(model.layers),
            "lora_parameters": {"rank": settings.rank, "scale": settings.scale, "dropout": 0.0},
        }
        model.freeze()
        mx.random.seed(settings.seed)  # LoRA A matrices start random
        linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"])
        return config

    def trainable(self, model) -> dict:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(model.trainable_parameters()))

    def optimizer(self, settings):
        import mlx.optimizers as optim

        return optim.AdamW(learning_rate=settings.lr, weight_decay=0.0)

    def save(self, model, config: dict, folder: Path) -> None:
        import mlx.core as mx

        mx.save_safetensors(str(Path(folder) / store.ADAPTER_FILE), self.trainable(model))
        (Path(folder) / store.CONFIG_FILE).write_text(json.dumps(config, indent=2))

    def load(self, model, folder: Path) -> None:
        from mlx_lm.tuner.utils import load_adapters

        load_adapters(model, str(folder))

    def remove(self, model) -> None:
        from mlx_lm.tuner.utils import remove_lora_layers

        remove_lora_layers(model)

    def base_of(self, module):
        from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
        from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

        if isinstance(module, (LoRALinear, LoRASwitchLinear, DoRALinear)):
            return module.linear
        if isinstance(module, (LoRAEmbedding, DoRAEmbedding)):
            return module.embedding
        return None


LORA = LoRA()

ADAPTER_KINDS: dict[str, AdapterKind] = {kind.name: kind for kind in (LORA, GATED)}


def kind_named(name: str) -> AdapterKind:
    """The registered kind called `name`, or a LiftError naming those there are."""
    if name not in ADAPTER_KINDS:
        raise LiftError(f"unknown adapter kind {name!r}; this lift-mlx knows "
                        f"{', '.join(ADAPTER_KINDS)} (a newer one may know more)")
    return ADAPTER_KINDS[name]


def kind_of(folder: Path) -> AdapterKind:
    """The kind of the adapter stored in `folder`: its config's fine_tune_type, else LoRA
    (mlx-lm's default)."""
    config = json.loads((Path(folder) / store.CONFIG_FILE).read_text())
    return kind_named(config.get("fine_tune_type") or LORA.name)


def load(model, folder: Path) -> None:
    """Load the adapter stored in `folder` onto the plain base `model`."""
    kind_of(folder).load(model, folder)


def remove(model) -> None:
    """Take every kind's layers off, so `model` is the plain base again."""
    for kind in ADAPTER_KINDS.values():
        kind.remove(model)


def base_view(model):
    """A second module tree over the same weight arrays without any adapter's layers: the
    plain base, whether they are attached already or later. Costs no memory (the arrays are
    shared)."""
    import mlx.nn as nn

    for kind in ADAPTER_KINDS.values():
        if (base := kind.base_of(model)) is not None:
            return base_view(base)
    view = copy.copy(model)
    for key, value in model.items():
        if isinstance(value, nn.Module):
            view[key] = base_view(value)
        elif isinstance(value, list):
            view[key] = [base_view(v) if isinstance(v, nn.Module) else v for v in value]
    return view
