"""The LIFT pipeline for one document: ingest -> split -> synthesize -> train -> store, and the
`Absorbed` object that answers questions with the adapter."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx

from . import __version__, store
from .answer import question_prompt, stream_answer
from .config import Settings, preset
from .errors import LiftError
from .ingest import Document, read_document
from .models import LoadedModel, load_model
from .progress import Progress, timed
from .prompts import encode
from .samples import qa_sample, recite_samples
from .split import segment_starts
from .synthesize import (
    SynthReport,
    cache_key,
    generate_qa,
    load_cached,
    save_cached,
    task_windows,
)
from .train import TrainReport, adapter_weights, attach_lora, steps_per_epoch, train


@dataclass
class AbsorbReport:
    doc_tokens: int = 0
    segments: int = 0
    recite_samples: int = 0
    qa_samples: int = 0
    synth: SynthReport = field(default_factory=SynthReport)
    train: TrainReport = field(default_factory=TrainReport)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    peak_memory_gb: float = 0.0
    reused: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train"].pop("losses")
        d["train"]["final_loss"] = self.train.final_loss
        return d


def _as_document(document) -> Document:
    return document if isinstance(document, Document) else read_document(document)


def _as_model(model) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def reset_adapter(lm: LoadedModel) -> None:
    """Take any LoRA layers off the model, so it is the plain base again."""
    from mlx_lm.tuner.utils import remove_lora_layers

    remove_lora_layers(lm.model)
    lm.model.unfreeze()
    lm.model.eval()


class Absorbed:
    """A base model with a document's adapter loaded: ask it questions."""

    def __init__(self, lm: LoadedModel, document_text: str, adapter_path: Path, meta: dict,
                 report: AbsorbReport | None = None):
        self.lm = lm
        self.document_text = document_text
        self.adapter_path = Path(adapter_path)
        self.meta = meta
        self.report = report
        self._doc_tokens: list[int] | None = None

    @property
    def doc_tokens(self) -> list[int]:
        if self._doc_tokens is None:
            self._doc_tokens = encode(self.lm.tokenizer, self.document_text)
        return self._doc_tokens

    def prompt(self, question: str, *, context: bool = True, max_tokens: int = 256) -> list[int]:
        tokens = self.doc_tokens if context else None
        return question_prompt(self.lm.tokenizer, question, tokens, self.lm.window, max_tokens)

    def stream(self, question: str, *, context: bool = True, max_tokens: int = 256,
               temp: float = 0.0) -> Iterator[str]:
        """Yield the answer as it is generated."""
        ids = self.prompt(question, context=context, max_tokens=max_tokens)
        yield from stream_answer(self.lm.model, self.lm.tokenizer, ids, max_tokens, temp)

    def ask(self, question: str, **kwargs) -> str:
        """The whole answer to `question` (see `stream` for the options)."""
        return "".join(self.stream(question, **kwargs))


def absorb(
    document,
    model: str | LoadedModel | None = None,
    *,
    preset_name: str = "default",
    settings: Settings | None = None,
    generator: str | LoadedModel | None = None,
    out: str | Path | None = None,
    reuse: bool = True,
    progress: Progress | None = None,
    **overrides,
) -> Absorbed:
    """Absorb `document` (a path, "-" or a Document) into a LoRA adapter on `model`.

    Settings come from `settings`, else the preset with flat overrides (`rank=16`, ...). The
    adapter goes to `out` or the store; a stored adapter for the same document, model and
    settings is reused unless `reuse=False`.
    """
    progress = progress or Progress(quiet=True)
    report = AbsorbReport()
    times = report.seconds
    with timed(times, "ingest"):
        doc = _as_document(document)
    settings = settings or preset(preset_name, **overrides)
    settings.validate()
    with timed(times, "load"):
        lm = _as_model(model)
    gen = None
    if generator is not None and "qa" in settings.train.tasks:
        gen = _as_model(generator)
    gen_id = gen.fingerprint if gen else "self"
    key = store.adapter_key(doc.sha256, lm.fingerprint, {**settings.to_dict(), "gen": gen_id})
    target = Path(out) if out else store.adapters_dir() / key
    if reuse and store.is_adapter_dir(target) and store.read_meta(target).get("key") == key:
        progress.log(f"Reusing the stored adapter {target}")
        absorbed = load_absorbed(target, lm)
        report.reused = True
        absorbed.report = report
        return absorbed

    reset_adapter(lm)
    tok = lm.tokenizer
    mx.reset_peak_memory()
    with timed(times, "split"):
        doc_tokens = encode(tok, doc.text)
        report.doc_tokens = len(doc_tokens)
        s = settings.split
        report.segments = len(segment_starts(len(doc_tokens), s.seg_len, s.stride))
    rng = random.Random(settings.train.seed)
    samples = []
    if "recite" in settings.train.tasks:
        with timed(times, "split"):
            samples += recite_samples(tok, doc_tokens, s.seg_len, s.stride, s.context_len, rng)
        report.recite_samples = len(samples)
    if "qa" in settings.train.tasks:
        with timed(times, "synthesize"):
            pairs, report.synth = _qa_pairs(doc, gen or lm, settings, progress)
        samples += [qa_sample(tok, p.question, p.answer) for p in pairs]
        report.qa_samples = len(pairs)
        if not pairs:
            progress.warn(
                "the generator wrote no usable question/answer pairs "
                f"({_drops(report.synth)}); training continues on the other tasks. "
                "A stronger generator (--generator) gives the QA tasks LIFT relies on."
            )
    if not samples:
        raise LiftError("nothing to train on: no QA pairs were kept and recite is off; "
                        "add recite to --tasks or use a stronger --generator")
    attach_config = attach_lora(lm.model, settings.train)
    total_steps = steps_per_epoch(samples, settings.train.batch_size) * settings.train.epochs
    with timed(times, "train"), progress.bar("train", total_steps) as update:
        report.train = train(
            lm.model, samples, settings.train, pad_id=_pad_id(tok),
            on_step=lambda i, n, loss, t: update(i, t, f"loss {loss:.3f}"),
        )
    report.peak_memory_gb = mx.get_peak_memory() / 1e9
    meta = {
        "key": key,
        "lift_mlx_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "document": {"sha256": doc.sha256, "source": doc.source, "chars": len(doc.text),
                     "tokens": report.doc_tokens},
        "model": {"name": lm.name, "path": str(lm.path), "fingerprint": lm.fingerprint},
        "generator": {"name": gen.name, "fingerprint": gen.fingerprint} if gen else "self",
        "settings": settings.to_dict(),
        "report": report.to_dict(),
    }
    with timed(times, "save"):
        path = store.save_adapter(target, adapter_weights(lm.model), attach_config, meta,
                                  doc.text)
    meta["report"] = report.to_dict()  # now with the save time
    store.write_atomic(path / store.META_FILE, _dumps(meta))
    absorbed = Absorbed(lm, doc.text, path, meta, report)
    absorbed._doc_tokens = doc_tokens
    return absorbed


def _dumps(obj) -> str:
    return json.dumps(obj, indent=2)


def _drops(report: SynthReport) -> str:
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items()))
    return f"{report.requests} requests; dropped: {dropped or 'none'}"


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


def _qa_pairs(doc: Document, gen: LoadedModel, settings: Settings, progress: Progress):
    path = store.qa_cache_path(cache_key(doc.sha256, gen.fingerprint, settings.synth))
    cached = load_cached(path)
    if cached is not None:
        progress.log(f"Using {len(cached)} cached QA pairs")
        return cached, SynthReport(kept=len(cached), cached=True)
    windows = task_windows(doc.text, settings.synth.sentences_per_task,
                           settings.synth.window_chars)
    with progress.bar("tasks", len(windows), unit="tok") as update:
        pairs, report = generate_qa(
            gen.model, gen.tokenizer, windows, settings.synth,
            on_batch=lambda done, total, toks: update(done, toks),
        )
    save_cached(path, pairs, report)
    return pairs, report


def load_absorbed(adapter_dir: str | Path, model: str | LoadedModel | None = None) -> Absorbed:
    """Load a stored adapter on its base model (or on `model`, which must be the same base)."""
    from mlx_lm.tuner.utils import load_adapters

    adapter_dir = Path(adapter_dir)
    meta = store.read_meta(adapter_dir)
    lm = _as_model(model or meta["model"]["name"])
    made_for = meta["model"]["fingerprint"]
    if lm.fingerprint != made_for:
        raise LiftError(
            f"adapter {adapter_dir} was made for base model {meta['model']['name']!r}, "
            f"not {lm.name!r}; pass --model {meta['model']['name']} or absorb again"
        )
    reset_adapter(lm)
    load_adapters(lm.model, str(adapter_dir))
    lm.model.eval()
    text = (adapter_dir / store.DOCUMENT_FILE).read_text(encoding="utf-8")
    return Absorbed(lm, text, adapter_dir, meta)
