"""Adapter kinds: the trainable layers an absorb puts on the frozen base, and how an adapter
folder stores them, one `AdapterKind` per module of this package, picked by name
(`--adapter`).

- `lora` (lora.py): LoRA on every linear layer of every block (the paper's choice), with
  mlx-lm's layers and in mlx-lm's format, so `mlx_lm.load(model, adapter_path=DIR)` loads it.
- `gated` (gated.py): Gated Memory, the attention adapter of the paper's earlier versions, in
  a format of its own that only lift-mlx loads.

A stored adapter names its kind in adapter_config.json's `fine_tune_type` (as mlx-lm's do);
one that names none is LoRA. Adding a kind: one module here whose `KIND` is an `AdapterKind`
(base.py; every module of the package is imported and registered below), or `register(kind)`
from outside the package.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlx.nn as nn

from .. import store
from ..errors import LiftError
from ..registry import add, defined_in
from .base import AdapterKind
from .lora import LORA  # the kind of an adapter whose config names none, as in mlx-lm

ADAPTER_KINDS: dict[str, AdapterKind] = {}


def register(kind: AdapterKind) -> AdapterKind:
    """Make `kind` known by its name (to `--adapter`, the store and the server), in its
    `order`."""
    return add(ADAPTER_KINDS, kind)


for _kind in defined_in(__name__, __path__, "KIND"):
    register(_kind)


def kind_named(name: str) -> AdapterKind:
    """The registered kind called `name`, or a LiftError naming those there are."""
    if name not in ADAPTER_KINDS:
        raise LiftError(f"unknown adapter kind {name!r}; this lift-mlx knows "
                        f"{', '.join(ADAPTER_KINDS)} (a newer one may know more)")
    return ADAPTER_KINDS[name]


def kind_of_config(config: dict) -> AdapterKind:
    """The kind an adapter_config.json names (fine_tune_type), else LoRA (mlx-lm's default)."""
    return kind_named(config.get("fine_tune_type") or LORA.name)


def kind_of(folder: Path) -> AdapterKind:
    """The kind of the adapter stored in `folder`."""
    return kind_of_config(json.loads((Path(folder) / store.CONFIG_FILE).read_text()))


def load(model: nn.Module, folder: Path) -> None:
    """Load the adapter stored in `folder` onto the plain base `model`."""
    kind_of(folder).load(model, folder)


def remove(model: nn.Module) -> None:
    """Take every kind's layers off, so `model` is the plain base again."""
    for kind in ADAPTER_KINDS.values():
        kind.remove(model)


def base_view(model: nn.Module) -> nn.Module:
    """A second module tree over the same weight arrays without any adapter's layers: the
    plain base, whether they are attached already or later. Costs no memory (the arrays are
    shared)."""
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
