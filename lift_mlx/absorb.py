"""The LIFT pipeline for one document: ingest -> split -> synthesize -> train -> store, and the
`Absorbed` object that answers questions with the adapter."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlx.core as mx

from . import __version__, adapters, backend, store
from .adapters import base_view
from .answer import about_document, question_prompt, stream_answer
from .checkpoints import Checkpoint
from .config import AnswerSettings, Settings, preset, setting_sources
from .errors import LiftError
from .generator_styles import QAPair, resolve_style
from .ingest import Document, read_document
from .models import LoadedModel, config_fingerprint, load_model, recommended_settings
from .progress import Progress, timed
from .prompts import encode
from .samples import QASamples, Sample, qa_sample, recite_samples
from .split import segment_starts
from .synthesize import (
    QAStream,
    SynthReport,
    cache_key,
    cached_json,
    cloze_pairs,
    load_cached,
    load_partial,
    partial_json,
    question_key,
    task_windows,
)
from .train import TrainReport, train


@dataclass
class AbsorbReport:
    doc_tokens: int = 0
    segments: int = 0
    recite_samples: int = 0
    cloze_samples: int = 0
    qa_samples: int = 0
    synth: SynthReport = field(default_factory=SynthReport)
    train: TrainReport = field(default_factory=TrainReport)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    peak_memory_gb: float = 0.0
    reused: bool = False
    pipeline: bool = True  # QA generation overlapped with training
    peak_memory: dict[str, float] = field(default_factory=dict)  # phase -> GB

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
    """Take any adapter off the model, so it is the plain base again."""
    adapters.remove(lm.model)
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
        self._base = None

    @property
    def doc_tokens(self) -> list[int]:
        if self._doc_tokens is None:
            self._doc_tokens = encode(self.lm.tokenizer, self.document_text)
        return self._doc_tokens

    def prompt(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> list[int]:
        """Prompt ids for `question` as `stream` answers it."""
        settings = replace(settings or AnswerSettings(), **changes)
        tokens = self.doc_tokens if settings.context else None
        return question_prompt(self.lm.tokenizer, question, tokens, self.lm.window,
                               settings.max_tokens)

    def uses_adapter(self, question: str) -> bool:
        """Whether the adapter answers `question`: where it is about the document (see
        `answer.about_document`); the plain base answers the rest, so absorbing a document
        costs nothing on general questions."""
        return about_document(question, self.document_text)

    def stream(self, question: str, settings: AnswerSettings | None = None, *,
               route: bool = True, **changes) -> Iterator[str]:
        """Yield the answer as it is generated (`settings`, with `changes` to its fields such
        as `max_tokens=64`); with `route`, questions not about the document are answered by
        the plain base (no adapter, no document view)."""
        settings = replace(settings or AnswerSettings(), **changes)
        model = self.lm.model
        if route and not self.uses_adapter(question):
            if self._base is None:
                self._base = base_view(self.lm.model)
            model, settings = self._base, replace(settings, context=False)
        ids = self.prompt(question, settings)
        yield from stream_answer(model, self.lm.tokenizer, ids, settings.max_tokens,
                                 settings.temp)

    def ask(self, question: str, settings: AnswerSettings | None = None, **kwargs) -> str:
        """The whole answer to `question` (see `stream` for the options)."""
        return "".join(self.stream(question, settings, **kwargs))


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
    pipeline: bool = True,
    **overrides,
) -> Absorbed:
    """Absorb `document` (a path, "-" or a Document) into an adapter on `model` (LoRA, or
    the kind `adapter=` names).

    Settings come from `settings`, else the preset with flat overrides (`rank=16`, ...). The
    adapter goes to `out` or the store; a stored adapter for the same document, model and
    settings is reused unless `reuse=False`. With `pipeline` (the default) training starts at
    once on the recite samples and QA samples join as the generator writes them; without it,
    all QA pairs are generated before training starts.
    """
    backend.use_recommended_wired_limit()
    progress = progress or Progress(quiet=True)
    report = AbsorbReport(pipeline=pipeline)
    times = report.seconds
    with timed(times, "ingest"):
        doc = _as_document(document)
    with timed(times, "load"):
        lm = _as_model(model)
    recommended = recommended_settings(lm.name)
    sources = {} if settings else setting_sources(preset_name, recommended, **overrides)
    settings = settings or preset(preset_name, recommended, **overrides)
    settings.validate()
    gen = None
    if generator is not None and "qa" in settings.train.tasks:
        gen = _as_model(generator)
    gen_id = gen.fingerprint if gen else "self"
    style = resolve_style(settings.synth.style, (gen or lm).model).version
    key = store.adapter_key(doc.sha256, lm.fingerprint,
                            {**settings.keyed(), "gen": gen_id, "style": style})
    target = Path(out) if out else store.adapters_dir() / key
    # One absorb per key at a time: a second one (another process or thread) waits for the
    # first, then finds its adapter and reuses it.
    checkpoint = Checkpoint(store.checkpoints_dir() / key, settings.train.checkpoint_every,
                            adapters.kind_named(settings.train.adapter).trainable)
    with _interruptible(progress, doc, gen or lm, settings, report, checkpoint), store.lock(
            key, on_wait=lambda holder: progress.log(
                f"Waiting for another absorb of this document to finish ({holder})")):
        if reuse and _stored(target, key, progress):
            progress.log(f"Reusing the stored adapter {target}")
            absorbed = load_absorbed(target, lm)
            report.reused = True
            absorbed.report = report
            return absorbed
        if not reuse:
            checkpoint.remove()  # absorb again from the start
        return _train_and_store(doc, lm, gen, settings, key, target, report, progress,
                                pipeline, sources, checkpoint)


def _train_and_store(doc: Document, lm: LoadedModel, gen: LoadedModel | None,
                     settings: Settings, key: str, target: Path, report: AbsorbReport,
                     progress: Progress, pipeline: bool, sources: dict,
                     checkpoint: Checkpoint) -> Absorbed:
    """Train the adapter of `doc` and store it at `target` (the caller holds the key's lock);
    a checkpoint an interrupted run of the same key kept is resumed."""
    times = report.seconds
    reset_adapter(lm)
    tok = lm.tokenizer
    mx.reset_peak_memory()
    with timed(times, "split"):
        doc_tokens = encode(tok, doc.text)
        report.doc_tokens = len(doc_tokens)
        s = settings.split
        report.segments = len(segment_starts(len(doc_tokens), s.seg_len, s.stride))
        ready = []  # samples there from the start: recite, then cloze
        if "recite" in settings.train.tasks:
            rng = random.Random(settings.train.seed)
            ready = recite_samples(tok, doc_tokens, s.seg_len, s.stride, s.context_len, rng)
        report.recite_samples = len(ready)
        make_qa = QASamples(tok, doc_tokens, s.qa_context_len, s.qa_context_share,
                            random.Random(settings.train.seed + 1))
        if "cloze" in settings.train.tasks:
            cloze = cloze_pairs(doc.text, settings.synth.window_chars)
            report.cloze_samples = len(cloze)
            ready += make_qa(cloze)
    source = None
    if "qa" in settings.train.tasks:
        # The generator is the plain base even while its adapter trains: a view that shares the
        # base's weight arrays and never gets the adapter's layers.
        source = _QASource(doc, gen or lm, None if gen else base_view(lm.model), settings,
                           progress)
    _phase_peak(report, "split")
    if not pipeline and source is not None:
        with timed(times, "synthesize"):
            source.run()
        _phase_peak(report, "synthesize")
    kind = adapters.kind_named(settings.train.adapter)
    adapter_config = kind.attach(lm.model, settings.train)
    if state := checkpoint.state():
        progress.log(f"Resuming training at step {state['step']}, where an interrupted "
                     "absorb of this document stopped")
    report.train = _train(lm, settings, ready, source, make_qa, report, progress,
                          checkpoint)
    _phase_peak(report, "train" if not pipeline or source is None else "synthesize+train")
    if source is not None:
        report.synth = source.report
    report.peak_memory_gb = max(report.peak_memory.values())
    meta = {
        "key": key,
        "lift_mlx_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "document": {"sha256": doc.sha256, "source": doc.source, "chars": len(doc.text),
                     "tokens": report.doc_tokens},
        "model": {"name": lm.name, "path": str(lm.path), "fingerprint": lm.fingerprint},
        "generator": {"name": gen.name, "fingerprint": gen.fingerprint} if gen else "self",
        "settings": settings.to_dict(),
        "settings_from": sources,
        "report": report.to_dict(),
    }
    with timed(times, "save"):
        path = store.save_adapter(target, lambda folder: kind.save(lm.model, adapter_config,
                                                                   folder), meta, doc.text)
        checkpoint.remove()
    _phase_peak(report, "save")
    meta["report"] = report.to_dict()  # now with the save time
    store.write_atomic(path / store.META_FILE, _dumps(meta))
    absorbed = Absorbed(lm, doc.text, path, meta, report)
    absorbed._doc_tokens = doc_tokens
    return absorbed


def _stored(target: Path, key: str, progress: Progress) -> bool:
    """Whether `target` holds the whole adapter of `key`; a damaged one is trained again."""
    if not (target / store.META_FILE).is_file():
        return False
    try:
        return store.verify(target).get("key") == key
    except store.Damaged as e:
        progress.warn(f"the stored adapter {target} is damaged ({e.reason}); absorbing the "
                      "document again to replace it")
    except LiftError as e:  # a newer lift-mlx wrote it
        progress.warn(f"{e}; absorbing it again with this one")
    return False


@contextmanager
def _interruptible(progress: Progress, doc: Document, gen: LoadedModel, settings: Settings,
                   report: AbsorbReport, checkpoint: Checkpoint) -> Iterator[None]:
    """SIGTERM stops an absorb as Ctrl-C does (the partial work is removed on the way out);
    either way the absorb says what it had done."""
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        progress.warn(_interrupted_note(doc, gen, settings, report, checkpoint))
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


def raise_interrupt(signum, frame):
    """A signal handler that stops the program as Ctrl-C does (for SIGTERM)."""
    raise KeyboardInterrupt


def _interrupted_note(doc: Document, gen: LoadedModel, settings: Settings,
                      report: AbsorbReport, checkpoint: Checkpoint) -> str:
    done = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in report.seconds.items())
    note = f"absorb of {doc.source} interrupted after {done}: no adapter was stored."
    if "qa" in settings.train.tasks:
        path = qa_cache_file(doc.sha256, gen, settings)
        try:
            cached = load_cached(path)
        except (OSError, ValueError, KeyError):
            cached = None
        partial, finished = load_partial(partial_file(path))
        if cached is not None:
            note += f" Its {len(cached)} QA pairs are cached; the same command again reuses them."
        elif finished:
            note += (f" {len(finished)} generator requests were done and their {len(partial)} "
                     "QA pairs kept; the same command again resumes from there.")
        else:
            note += " No QA pairs were cached yet."
    if state := checkpoint.state():
        note += (f" Training was checkpointed at step {state['step']}; the same command again "
                 "resumes there.")
    return note


def _phase_peak(report: AbsorbReport, phase: str) -> None:
    report.peak_memory[phase] = mx.get_peak_memory() / 1e9
    mx.reset_peak_memory()


def qa_cache_file(doc_sha: str, gen: LoadedModel, settings: Settings) -> Path:
    """Where the QA pairs that generator `gen` writes about a document are cached."""
    style = resolve_style(settings.synth.style, gen.model)
    return store.qa_cache_path(cache_key(doc_sha, gen.fingerprint, settings.synth, style))


def partial_file(cache: Path) -> Path:
    """Where an unfinished generation keeps the pairs of its finished requests."""
    return cache.with_name(cache.stem + ".partial.json")


class _QASource:
    """The QA pairs of a document: from the cache, or generated step by step (`QAStream`)."""

    def __init__(self, doc: Document, gen: LoadedModel, view, settings: Settings,
                 progress: Progress):
        self.settings = settings
        self.progress = progress
        self.style = resolve_style(settings.synth.style, gen.model)
        self.path = qa_cache_file(doc.sha256, gen, settings)
        self.pairs: list[QAPair] = []
        self.fresh: list[QAPair] = []  # pairs not yet handed to training
        self.stream = None
        cached = load_cached(self.path)
        if cached is not None:
            progress.log(f"Using {len(cached)} cached QA pairs")
            self.pairs = self.fresh = list(cached)
            self.report = SynthReport(kept=len(cached), cached=True)
            return
        windows = task_windows(doc.text, settings.synth.sentences_per_task,
                               settings.synth.window_chars)
        self.windows = len(windows)
        # Pairs of an interrupted run are kept as its requests finish: resume from them.
        self.partial = partial_file(self.path)
        self.pairs, finished = load_partial(self.partial)
        self.fresh = list(self.pairs)
        if finished:
            progress.log(f"Resuming QA generation: {len(finished)} requests done, "
                         f"{len(self.pairs)} pairs kept")
        self.stream = QAStream(view or gen.model, gen.tokenizer, windows, settings.synth,
                               self.style, done=finished,
                               seen={question_key(p.question) for p in self.pairs})
        self.report = self.stream.report
        if self.stream.done:  # interrupted after its last request, before the cache was saved
            self.step()

    @property
    def done(self) -> bool:
        return self.stream is None or self.stream.done

    def step(self) -> None:
        before = self.stream.finished
        new = self.stream.step()  # nothing to do once done: then it only closes below
        self.pairs += new
        self.fresh += new
        if self.stream.done:
            self.report = self.stream.close()
            store.write_atomic(self.path, cached_json(self.pairs, self.report))
            self.partial.unlink(missing_ok=True)
        elif self.stream.finished > before:
            store.write_atomic(self.partial, partial_json(self.pairs, self.stream.finished_ids))

    def take(self) -> list[QAPair]:
        fresh, self.fresh = self.fresh, []
        return fresh

    def run(self) -> None:
        """Generate everything now (the sequential schedule)."""
        if self.done:
            return
        with self.progress.bar("tasks", len(self.stream.requests), unit="tok") as update:
            while not self.done:
                self.step()
                update(self.stream.finished, self.stream.report.generated_tokens)


def _train(lm: LoadedModel, settings: Settings, ready: list[Sample],
           source: _QASource | None, make_qa: QASamples, report: AbsorbReport,
           progress: Progress, checkpoint: Checkpoint) -> TrainReport:
    """Train on the samples `ready` (recite, cloze) and on the QA samples as the generator
    writes them."""
    t = settings.train
    tok = lm.tokenizer
    longest = (len(qa_sample(tok, "", "", make_qa.view)) + settings.synth.max_tokens
               if source else 0)
    expected_qa = 0
    if source is not None:
        expected_qa = len(source.fresh) if source.done else source.windows * (
            settings.synth.qa_per_sentence * settings.synth.sentences_per_task)
    estimate = (len(ready) + expected_qa) * t.epochs // t.batch_size + 1
    with progress.bar("train", estimate) as update:
        def on_step(i, n, loss, tokens):
            qa = f", qa {len(source.pairs)}" if source is not None else ""
            update(i, tokens, f"loss {loss:.3f}{qa}")

        start = time.perf_counter()
        train_report = train(lm.model, ready, t, _pad_id(tok), on_step,
                             arriving=_qa_samples(source, make_qa, bool(ready), report,
                                                  progress),
                             longest=longest, total=estimate, checkpoint=checkpoint)
    elapsed = time.perf_counter() - start
    times = report.seconds
    times["train"] = elapsed - (times.get("synthesize", 0.0) if report.pipeline else 0.0)
    return train_report


def _qa_samples(source: _QASource | None, make_qa: QASamples, ready: bool,
                report: AbsorbReport, progress: Progress) -> Iterator[list[Sample]]:
    """The QA samples for `train`: those at hand first, then one generator step per `next()`
    and the samples of the pairs it finished; at the end, what was kept is reported."""
    times = report.seconds

    def samples() -> list[Sample]:
        return make_qa(source.take())

    if source is not None:
        yield samples()
        while not source.done:
            start = time.perf_counter()
            source.step()
            times["synthesize"] = times.get("synthesize", 0.0) + time.perf_counter() - start
            yield samples()
        report.qa_samples = len(source.pairs)
        _warn_if_no_pairs(source, progress)
    if not ready and not (source and source.pairs):
        raise LiftError("nothing to train on: no QA pairs were kept and recite is off; "
                        "add recite to --tasks or use a stronger --generator")


def _warn_if_no_pairs(source: _QASource, progress: Progress) -> None:
    if not source.pairs:
        progress.warn(
            "the generator wrote no usable question/answer pairs "
            f"({_drops(source.report)}); training continues on the other tasks. "
            "A stronger generator (--generator) gives the QA tasks LIFT relies on."
        )


def _dumps(obj) -> str:
    return json.dumps(obj, indent=2)


def _drops(report: SynthReport) -> str:
    if report.cached:
        return "cached from an earlier run of the same generator on this document"
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items()))
    return f"{report.requests} requests; dropped: {dropped or 'none'}"


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


class Absorbing:
    """An absorb running in a background thread, answering questions meanwhile.

    Until the adapter is ready, answers come at once from the plain base with the head+tail
    view of the document (a base view that the training never touches); once it is ready,
    from the adapter, as `Absorbed` answers.
    """

    def __init__(self, document, model: str | LoadedModel | None = None, **absorb_kwargs):
        self.document = _as_document(document)
        self.lm = _as_model(model)
        reset_adapter(self.lm)
        self._base = base_view(self.lm.model)
        self._doc_tokens = encode(self.lm.tokenizer, self.document.text)
        self._result: Absorbed | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(absorb_kwargs,), daemon=True)
        self._thread.start()

    def _run(self, kwargs: dict) -> None:
        try:
            self._result = absorb(self.document, self.lm, **kwargs)
        except BaseException as e:  # handed to the caller by wait()
            self._error = e

    @property
    def ready(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> Absorbed:
        """Block until the adapter is trained and stored; the finished `Absorbed`."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def prompt(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> list[int]:
        settings = replace(settings or AnswerSettings(), **changes)
        if self.ready:
            return self.wait().prompt(question, settings)
        # The base knows nothing of the document: it always gets the head+tail view.
        return question_prompt(self.lm.tokenizer, question, self._doc_tokens, self.lm.window,
                               settings.max_tokens)

    def stream(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> Iterator[str]:
        """Yield the answer: from the adapter when it is ready, else from the base at once."""
        settings = replace(settings or AnswerSettings(), **changes)
        if self.ready:
            yield from self.wait().stream(question, settings)
            return
        ids = self.prompt(question, settings)
        yield from stream_answer(self._base, self.lm.tokenizer, ids, settings.max_tokens,
                                 settings.temp)

    def ask(self, question: str, settings: AnswerSettings | None = None, **kwargs) -> str:
        return "".join(self.stream(question, settings, **kwargs))


def load_absorbed(adapter_dir: str | Path, model: str | LoadedModel | None = None) -> Absorbed:
    """Load a stored adapter on its base model (or on `model`, which must be the same base)."""
    adapter_dir = Path(adapter_dir)
    meta = store.verify(adapter_dir)  # a damaged entry is refused, never loaded
    lm = _as_model(model or meta["model"]["name"])
    made_for = meta["model"]["fingerprint"]
    if made_for not in (lm.fingerprint, config_fingerprint(lm.path)):  # the latter: older entries
        raise LiftError(
            f"adapter {adapter_dir} was made for base model {meta['model']['name']!r}, "
            f"not {lm.name!r}; pass --model {meta['model']['name']} or absorb again"
        )
    reset_adapter(lm)
    adapters.load(lm.model, adapter_dir)
    lm.model.eval()
    text = (adapter_dir / store.DOCUMENT_FILE).read_text(encoding="utf-8")
    return Absorbed(lm, text, adapter_dir, meta)
