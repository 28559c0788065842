"""The extension axes hold their promise: a task kind, an adapter kind and a model source
written outside the package, registered, run a real absorb and ask on a tiny model, and
nothing inside lift_mlx/ names them."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest
from click.testing import CliRunner
from conftest import FAST

import lift_mlx
from lift_mlx import adapters, sources, store, tasks
from lift_mlx.absorb import absorb
from lift_mlx.absorbed import load_absorbed
from lift_mlx.adapters import ADAPTER_KINDS, AdapterKind
from lift_mlx.cli import cli
from lift_mlx.generator_styles import QAPair
from lift_mlx.models import load_model
from lift_mlx.samples import Sample
from lift_mlx.sources import MODEL_SOURCES, ModelSource
from lift_mlx.split import split_sentences
from lift_mlx.tasks import TASKS, Task, TaskInput
from lift_mlx.tiny import build_tiny_model

OPENING_QUESTION = "How does the document begin?"


class Opening(Task):
    """A toy task: one question whose answer is the document's first sentence."""

    name = "opening"
    help = "the first sentence, asked for"

    def samples(self, given: TaskInput) -> list[Sample]:
        first = split_sentences(given.doc.text)[0]
        return given.qa([QAPair(OPENING_QUESTION, first)])


class Shifted(nn.Module):
    """A block's MLP with a learned vector added to its output."""

    def __init__(self, mlp: nn.Module, dims: int):
        super().__init__()
        self.mlp = mlp
        self.shift = mx.zeros((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return self.mlp(x) + self.shift


class Shift(AdapterKind):
    """A toy adapter kind: a trained vector added to every block's MLP output."""

    name = "shift"
    help = "a vector added to each MLP's output"

    def config(self, model, settings) -> dict:
        return {"fine_tune_type": self.name, "num_layers": len(model.layers),
                "dims": model.args.hidden_size}

    def build(self, model, config: dict) -> None:
        for layer in model.layers:
            layer.mlp = Shifted(layer.mlp, config["dims"])

    def optimizer(self, settings):
        return optim.Adam(learning_rate=settings.lr)

    def remove(self, model) -> None:
        for layer in getattr(model, "layers", []):
            if isinstance(layer.mlp, Shifted):
                layer.mlp = layer.mlp.mlp

    def base_of(self, module):
        return module.mlp if isinstance(module, Shifted) else None


class Built(ModelSource):
    """A toy model source: `built:SEED`, a tiny random llama built on first use."""

    name = "built"
    help = "built:SEED (a tiny random llama)"

    def __init__(self, folder: Path):
        self.folder = folder

    def claims(self, model: str) -> bool:
        return model.startswith("built:")

    def resolve(self, model: str) -> Path:
        path = self.folder / model.replace(":", "-")
        if not path.is_dir():
            build_tiny_model(path, seed=int(model.removeprefix("built:")))
        return path


@pytest.fixture
def toy_kinds(tmp_path_factory):
    task, kind = tasks.register(Opening()), adapters.register(Shift())
    source = sources.register(Built(tmp_path_factory.mktemp("built")))
    yield task, kind, source
    del TASKS[task.name], ADAPTER_KINDS[kind.name], MODEL_SOURCES[source.name]


def test_nothing_in_the_package_names_the_toy_kinds():
    package = Path(lift_mlx.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        for name in ("Opening", "Shifted", "Built", '"opening"', '"shift"', "built:"):
            assert name not in text, f"{path} names {name}"


def test_a_toy_task_adapter_kind_and_model_source_absorb_and_answer(toy_kinds, tmp_path,
                                                                    demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1500])
    tiny_lm = load_model("built:3")
    assert tiny_lm.name == "built:3" and tiny_lm.path.parent == toy_kinds[2].folder
    base = tiny_lm.model(mx.array([[3, 4, 5, 6]]))
    absorbed = absorb(doc, tiny_lm, tasks=("recite", "opening"), adapter="shift",
                      **{**FAST, "rank": None}, lr=1e-2)
    assert absorbed.report.samples == {"recite": absorbed.report.samples["recite"], "qa": 0,
                                       "cloze": 0, "phrases": 0, "opening": 1}
    assert absorbed.meta["report"]["opening_samples"] == 1
    config = json.loads((absorbed.adapter_path / store.CONFIG_FILE).read_text())
    assert config["fine_tune_type"] == "shift"
    weights = mx.load(str(absorbed.adapter_path / store.ADAPTER_FILE))
    assert set(weights) == {f"model.layers.{i}.mlp.shift" for i in range(config["num_layers"])}
    assert all(mx.abs(w).max().item() > 0 for w in weights.values())  # the vectors trained
    adapted = tiny_lm.model(mx.array([[3, 4, 5, 6]]))
    assert not mx.allclose(adapted, base, atol=1e-5).item()

    answer = absorbed.ask(OPENING_QUESTION, max_tokens=6, route=False)
    assert absorbed.meta["model"]["name"] == "built:3"
    again = load_absorbed(absorbed.adapter_path, tiny_lm)  # the kind rebuilds from its config
    assert mx.allclose(tiny_lm.model(mx.array([[3, 4, 5, 6]])), adapted, atol=1e-6).item()
    assert again.ask(OPENING_QUESTION, max_tokens=6, route=False) == answer
    adapters.remove(tiny_lm.model)
    assert mx.allclose(tiny_lm.model(mx.array([[3, 4, 5, 6]])), base, atol=1e-6).item()


def test_a_task_s_version_keys_the_adapters_trained_on_it(toy_kinds, tmp_path, demo_text,
                                                          monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1000])
    settings = dict(tasks=("recite", "opening"), **{**FAST, "epochs": 1})
    first = absorb(doc, "built:5", **settings)
    assert absorb(doc, "built:5", **settings).report.reused
    monkeypatch.setattr(toy_kinds[0], "version", "2")  # its samples changed: absorb anew
    again = absorb(doc, "built:5", **settings)
    assert not again.report.reused and again.meta["key"] != first.meta["key"]


def test_the_toy_kinds_appear_in_the_cli_by_name(toy_kinds, tmp_path, demo_text):
    doc = tmp_path / "doc.md"
    doc.write_text(demo_text[:1200])
    runner = CliRunner()
    args = ["ask", str(doc), OPENING_QUESTION, "--model", "built:4", "--tasks",
            "recite,opening", "--adapter", "shift", "--seg-len", "128", "--stride", "64",
            "--epochs", "1", "--max-tokens", "4", "--quiet"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    adapter = next(store.adapters_dir().iterdir())
    r = runner.invoke(cli, ["info", str(adapter)])
    assert r.exit_code == 0, r.output
    assert "1 opening" in r.stdout and "adapter=shift" in r.stdout
    assert "base model   built:4" in r.stdout
    r = runner.invoke(cli, ["ask", str(adapter), OPENING_QUESTION, "--max-tokens", "4"])
    assert r.exit_code == 0, r.output  # its base found again through the toy source
    r = runner.invoke(cli, ["absorb", str(doc), "--tasks", "recite,dance"])
    assert r.exit_code == 2 and "recite,qa,cloze,phrases,opening" in r.output
