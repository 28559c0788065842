"""The interface of an adapter kind (see the package's docstring): a kind writes its config and
rebuilds its layers from it; attaching, saving and loading are the same for every kind."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .. import store
from ..errors import LiftError


class AdapterKind:
    """What training, the store and answering need of an adapter kind.

    A kind puts its layers in by replacing modules of the model tree (as LoRA wraps each
    linear layer) and says which module each of them replaced (`base_of`), so a `base_view`
    is the plain base, taken before the layers are attached or after. A kind writes its
    `config` (adapter_config.json) and rebuilds its layers from it (`build`); attaching,
    saving and loading are the same for every kind.
    """

    name: str  # its adapter_config.json's "fine_tune_type"
    help: str  # one line for `--adapter`'s help
    defaults: dict = {}  # flat settings it trains with unless an option sets them
    order: int = 100  # where it stands in lists and help texts

    def config(self, model: nn.Module, settings) -> dict:
        """The adapter_config.json of this kind for `model` (`settings`: TrainSettings)."""
        raise NotImplementedError

    def build(self, model: nn.Module, config: dict) -> None:
        """Put the layers `config` describes on the plain base, with their starting weights."""
        raise NotImplementedError

    def optimizer(self, settings):
        """The optimizer that trains its arrays (`settings`: TrainSettings)."""
        raise NotImplementedError

    def remove(self, model: nn.Module) -> None:
        """Take the kind's layers off the model (nothing happens where it has none)."""
        raise NotImplementedError

    def base_of(self, module):
        """The module that `module`, one of the kind's layers, replaced; None for others."""
        raise NotImplementedError

    # A kind that can say more about a trained adapter than its settings (`lift-mlx info`):
    # probe(model, tokenizer, document) -> {probe name: one value per layer}.
    probe = None

    def attach(self, model: nn.Module, settings) -> dict:
        """Freeze the base and add the kind's trainable layers; the config that rebuilds them."""
        config = self.config(model, settings)
        model.freeze()
        mx.random.seed(settings.seed)  # layers that start random start the same each run
        self.build(model, config)
        return config

    def trainable(self, model: nn.Module) -> dict:
        """The arrays training updates, by parameter path (what a checkpoint keeps)."""
        return dict(tree_flatten(model.trainable_parameters()))

    def save(self, model: nn.Module, config: dict, folder: Path) -> None:
        """Write the adapter's files (`store.ADAPTER_FILE`, `store.CONFIG_FILE`) in `folder`."""
        mx.save_safetensors(str(Path(folder) / store.ADAPTER_FILE), self.trainable(model))
        (Path(folder) / store.CONFIG_FILE).write_text(json.dumps(config, indent=2))

    def load(self, model: nn.Module, folder: Path) -> None:
        """Rebuild the layers `folder`'s config describes on the plain base, with its weights."""
        config = json.loads((Path(folder) / store.CONFIG_FILE).read_text())
        weights = mx.load(str(Path(folder) / store.ADAPTER_FILE))
        model.freeze()
        self.build(model, config)
        expected = {k: v.shape for k, v in self.trainable(model).items()}
        if {k: v.shape for k, v in weights.items()} != expected:
            self.remove(model)
            raise LiftError(f"the adapter {folder} does not fit this model's layers; it was "
                            "made for another base model")
        model.load_weights(list(weights.items()), strict=False)
