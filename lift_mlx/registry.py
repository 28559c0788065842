"""What the extension axes (task kinds, adapter kinds, model sources) share: a registry by name
whose entries stay in their `order`, filled with what each module of a sub-package defines."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def add(registry: dict, entry):
    """Put `entry` in `registry` under its `name`, every entry in its `order` (lists, help
    texts and the order things are tried in follow it; entries without one come last)."""
    registry[entry.name] = entry
    ordered = sorted(registry.values(), key=lambda e: getattr(e, "order", 100))
    registry.clear()
    registry.update((e.name, e) for e in ordered)
    return entry


def defined_in(package: str, path: Iterable[str], attribute: str) -> list:
    """`attribute` of every module of the package called `package` (its `__path__`: `path`)
    that defines it, by module name: a new file in the package is a new entry, and nothing
    else has to name it."""
    found = []
    for module in pkgutil.iter_modules(path):
        imported = importlib.import_module(f"{package}.{module.name}")
        if hasattr(imported, attribute):
            found.append(getattr(imported, attribute))
    return found
