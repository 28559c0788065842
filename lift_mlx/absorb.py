"""The LIFT pipeline for one document: ingest -> split -> tasks -> train -> store, one `Run`
at a time, and `Absorbing`, an absorb in the background that answers meanwhile."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlx.core as mx

from . import __version__, adapters, backend, distributed, store
from .absorbed import (
    PLAIN_READER,
    STORED_PASSAGE_LEN,
    Absorbed,
    as_model,
    load_absorbed,
    reset_adapter,
)
from .adapters import base_view
from .answer import about_document, document_prompt, stream_answer
from .checkpoints import Checkpoint, Spent
from .config import AnswerSettings, Settings, preset, setting_sources, settings_lines
from .distributed import World
from .errors import LiftError, raise_interrupt
from .flops import absorb_peak, compute_dtype, parameter_count, training_flops
from .generator_styles import resolve_style
from .ingest import Document, document_tokens, read_document
from .models import LoadedModel
from .presets import recommended_settings
from .progress import Progress, timed
from .prompts import prompt_tokenizer
from .retrieval import Passage, PassageIndex, passage_index, save_index
from .samples import QASamples, Reader, Sample
from .split import segment_starts
from .synthesize import SynthReport
from .tasks import TASKS, Arriving, TaskInput, tasks_named
from .train import Diverged, TrainReport, train


@dataclass
class AbsorbReport:
    doc_tokens: int = 0
    segments: int = 0
    # task -> samples made, every task known (0 where it did not run)
    samples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TASKS, 0))
    synth: SynthReport = field(default_factory=SynthReport)
    train: TrainReport = field(default_factory=TrainReport)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    peak_memory_gb: float = 0.0
    reused: bool = False
    pipeline: bool = True  # QA generation overlapped with training
    peak_memory: dict[str, float] = field(default_factory=dict)  # phase -> GB
    ranks: int = 1  # processes that trained it together (mlx.launch), each on its rows
    # the absorb runs that trained it: more than one when it resumed interrupted ones, whose
    # seconds `seconds` (this run's) lacks
    runs: int = 1
    earlier_seconds: float = 0.0
    # the training's FLOPs (flops.training_flops) and the matmul peak measured in the same
    # process (flops.absorb_peak), per rank: what MFU is reckoned from
    train_flops: float = 0.0
    matmul_flops: float = 0.0

    @property
    def mfu(self) -> float | None:
        """The share of the machine's matmul peak the training ran at (None: not trained)."""
        seconds = self.seconds.get("train", 0.0)
        if not (self.train_flops and self.matmul_flops and seconds > 0):
            return None
        return self.train_flops / (seconds * self.matmul_flops * self.ranks)

    @property
    def total_seconds(self) -> float:
        """What the absorb took over all its runs, model loading excluded."""
        return self.earlier_seconds + sum(v for k, v in self.seconds.items() if k != "load")

    def to_dict(self) -> dict:
        """As stored in the adapter's metadata: each task's count as TASK_samples, and the
        time of all runs as total_seconds."""
        d = asdict(self)
        d["total_seconds"] = self.total_seconds
        del d["earlier_seconds"]
        d["train"].pop("losses")
        d["train"]["final_loss"] = self.train.final_loss
        for name, count in d.pop("samples").items():
            d[f"{name}_samples"] = count
        return d


@dataclass
class Run:
    """One absorb: what it absorbs with which settings, where the adapter goes, and how far
    it has come."""

    doc: Document
    lm: LoadedModel
    gen: LoadedModel | None  # a separate generator model; None: the base writes the tasks
    settings: Settings
    key: str  # the store key of the adapter
    target: Path  # where the adapter goes
    progress: Progress
    sources: dict  # where each setting came from (`config.setting_sources`)
    checkpoint: Checkpoint | None  # None across ranks: rank 0's alone would resume one rank
    report: AbsorbReport
    world: World  # the ranks that absorb together; this process alone without a launcher


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
) -> Absorbed | None:
    """Absorb `document` (a path, "-" or a Document) into an adapter on `model` (LoRA, or
    the kind `adapter=` names).

    Settings come from `settings`, else the preset with flat overrides (`rank=16`, ...). The
    adapter goes to `out` or the store; a stored adapter for the same document, model and
    settings is reused unless `reuse=False`. With `pipeline` (the default) training starts at
    once on the samples ready at the start and QA samples join as the generator writes them;
    without it, all QA pairs are generated before training starts.

    Started by `mlx.launch` on several ranks, they absorb together (`distributed`): the QA
    pairs are generated first, shared out; each rank trains its rows of every batch; rank 0
    alone stores the adapter, and returns it; the other ranks return None.
    """
    backend.use_recommended_wired_limit()
    backend.warn_if_slow_blas()
    world = distributed.world()
    progress = progress if progress is not None and world.rank == 0 else Progress(quiet=True)
    # across ranks the samples must arrive in the same order on each: generated first
    report = AbsorbReport(pipeline=pipeline and world.size == 1, ranks=world.size)
    times = report.seconds
    with timed(times, "ingest"):
        doc = document if isinstance(document, Document) else read_document(document)
    with timed(times, "load"):
        lm = as_model(model)
    recommended = recommended_settings(lm.name)
    sources = {} if settings else setting_sources(preset_name, recommended, **overrides)
    settings = settings or preset(preset_name, recommended, **overrides)
    settings.validate()
    gen = None
    if generator is not None and "qa" in settings.train.tasks:
        gen = as_model(generator)
    gen_id = gen.fingerprint if gen else "self"
    key = _adapter_key(doc, lm, settings, gen)
    target = Path(out) if out else store.adapters_dir() / key
    checkpoint = None
    if world.size == 1:
        checkpoint = Checkpoint(store.checkpoints_dir() / key, settings.train.checkpoint_every,
                                adapters.kind_named(settings.train.adapter).trainable)
    run = Run(doc, lm, gen, settings, key, target, progress, sources, checkpoint, report, world)
    # One absorb per key at a time: a second one (another process or thread) waits for the
    # first, then finds its adapter and reuses it. Across ranks, rank 0 holds the lock and
    # its store decides.
    first = world.rank == 0
    if first:
        store.clean_partials()  # what absorbs killed while saving left (not one still saving)
    lock = store.lock(key, on_wait=lambda holder: progress.log(
        f"Waiting for another absorb of this document to finish ({holder})")) if first else None
    with _interruptible(run):
        # every rank refuses at once, together: mlx.launch ends the others when one exits
        world.agree(document=doc.sha256, model=lm.fingerprint, generator=gen_id, settings=key)
        world.check_batch(settings.train.batch_size)
        with lock or nullcontext():
            if world.first(reuse and first and _stored(target, key, progress)):
                if not first:
                    return None
                progress.log(f"Reusing the stored adapter {target}")
                absorbed = load_absorbed(target, lm)
                report.reused = True
                absorbed.report = report
                return absorbed
            if not reuse and checkpoint is not None:
                checkpoint.remove()  # absorb again from the start
            try:
                return _train_and_store(run)
            except KeyboardInterrupt:
                if checkpoint is not None:  # the run that resumes it reports the total time
                    checkpoint.count_interrupted()
                raise


def _train_and_store(run: Run) -> Absorbed | None:
    """Train the adapter of `run` and store it (the caller holds the key's lock); a
    checkpoint an interrupted run of the same key kept is resumed. Across ranks, only rank 0
    stores it (the others return None)."""
    lm, settings, report = run.lm, run.settings, run.report
    times = report.seconds
    reset_adapter(lm)
    tok = lm.tokenizer
    prompting = prompt_tokenizer(tok, settings.train.system_prompt)  # as the adapter answers
    tasks = tasks_named(settings.train.tasks)
    mx.reset_peak_memory()
    with timed(times, "index"):  # stored with the adapter: answers with `retrieve` read it
        index = passage_index(tok, run.doc.text, STORED_PASSAGE_LEN)
    with timed(times, "split"):
        doc_tokens = document_tokens(tok, run.doc)
        report.doc_tokens = len(doc_tokens)
        s = settings.split
        report.segments = len(segment_starts(len(doc_tokens), s.seg_len, s.stride))
        # The generator is the plain base even while its adapter trains: a view that shares
        # the base's weight arrays and never gets the adapter's layers.
        reader = None
        if s.reader_share > 0:
            passages = (index if s.reader_passage_len == index.passage_len
                        else passage_index(tok, run.doc.text, s.reader_passage_len))
            reader = Reader(prompting, passages, s.reader_share, s.reader_oracle, s.reader_len)
        given = TaskInput(run.doc, doc_tokens, prompting, settings,
                          QASamples(prompting, doc_tokens, s.qa_context_len, s.qa_context_share,
                                    random.Random(settings.train.seed + 1), reader),
                          run.gen or lm, run.gen.model if run.gen else base_view(lm.model),
                          run.progress, run.world)
        ready = []  # samples there from the start, task by task
        for task in tasks:
            samples = task.samples(given)
            report.samples[task.name] = len(samples)
            ready += samples
    arriving = {task.name: a for task in tasks if (a := task.arriving(given)) is not None}
    _phase_peak(report, "split")
    if not report.pipeline and arriving:
        with timed(times, "synthesize"):
            for source in arriving.values():
                source.run()
        _phase_peak(report, "synthesize")
    if run.progress.bars:  # on a terminal: the settings it trains with, before it does
        for line in settings_lines(settings.to_dict(), run.sources):
            run.progress.log(line)
    kind = adapters.kind_named(settings.train.adapter)
    adapter_config = kind.attach(lm.model, settings.train)
    if run.checkpoint is not None and (state := run.checkpoint.state()):
        run.progress.log(f"Resuming training at step {state['step']}, where an interrupted "
                         "absorb of this document stopped")
    report.train = _train(run, ready, arriving)
    report.train_flops = training_flops(parameter_count(run.lm.model), report.train.tokens)
    report.matmul_flops = absorb_peak(compute_dtype(run.lm.model))
    # the interrupted runs this one resumed (none across ranks: they keep no checkpoint)
    before = (run.checkpoint.before if run.checkpoint is not None else None) or Spent()
    report.runs, report.earlier_seconds = before.runs + 1, before.seconds
    _phase_peak(report, "train" if not report.pipeline or not arriving else "synthesize+train")
    for source in arriving.values():
        report.synth = source.report or report.synth
    report.peak_memory_gb = max(report.peak_memory.values())
    if run.world.rank > 0:
        return None
    meta = _meta(run)

    def write(folder: Path) -> None:
        with timed(times, "save"):
            kind.save(lm.model, adapter_config, folder)
            save_index(index, folder / store.INDEX_DIR)
        _phase_peak(report, "save")
        meta["report"] = report.to_dict()  # with the save time, before the metadata is written

    path = store.save_adapter(run.target, write, meta, run.doc.text)
    if run.checkpoint is not None:
        run.checkpoint.remove()
    absorbed = Absorbed(lm, run.doc.text, path, meta, report)
    absorbed._doc_tokens = doc_tokens
    absorbed._indexes[index.passage_len] = index
    return absorbed


def _meta(run: Run) -> dict:
    """The adapter's metadata (the store adds its checksums): what made it, and how."""
    lm, gen, doc = run.lm, run.gen, run.doc
    return {
        "key": run.key,
        "lift_mlx_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "document": {"sha256": doc.sha256, "source": doc.source, "chars": len(doc.text),
                     "tokens": run.report.doc_tokens},
        "model": {"name": lm.name, "path": str(lm.path), "fingerprint": lm.fingerprint},
        "generator": {"name": gen.name, "fingerprint": gen.fingerprint} if gen else "self",
        "settings": run.settings.to_dict(),
        "settings_from": run.sources,
        "report": run.report.to_dict(),
    }


def _adapter_key(doc: Document, lm: LoadedModel, settings: Settings,
                 gen: LoadedModel | None) -> str:
    """The store's key for `doc` absorbed on `lm` with `settings` (and QA tasks written by
    `gen`, None: by `lm` itself)."""
    style = resolve_style(settings.synth.style, (gen or lm).model).version
    versions = {t.name: t.version for t in tasks_named(settings.train.tasks) if t.version}
    return store.adapter_key(doc.sha256, lm.fingerprint,
                             {**settings.keyed(), "gen": gen.fingerprint if gen else "self",
                              "style": style, **({"task_versions": versions} if versions else {})})


def stored_adapter(doc: Document, lm: LoadedModel, preset_name: str = "default",
                   generator: str | LoadedModel | None = None, **overrides) -> Path | None:
    """The store's adapter for `doc` on `lm` with these settings (as `absorb` takes them),
    where one is stored whole and undamaged; else None. Loads no model: with QA tasks written
    by another model, that model's adapter is looked up only where `generator` is loaded."""
    settings = preset(preset_name, recommended_settings(lm.name), **overrides)
    settings.validate()
    gen = None  # as absorb keys it: the generator counts only where it writes QA tasks
    if generator is not None and "qa" in settings.train.tasks:
        if not isinstance(generator, LoadedModel):
            return None  # keyed by a generator not loaded here: absorb finds it
        gen = generator
    target = store.adapters_dir() / _adapter_key(doc, lm, settings, gen)
    return target if _stored(target, target.name, Progress(quiet=True)) else None


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
def _interruptible(run: Run) -> Iterator[None]:
    """SIGTERM stops an absorb as Ctrl-C does (the partial work is removed on the way out);
    either way the absorb says what it had done. Across ranks, `distributed.together` handles
    the signals, and a rank that loses another stops with one line."""
    installed = run.world.size == 1 and threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        with distributed.together(run.world, run.progress.warn):
            yield
    except KeyboardInterrupt:
        run.progress.warn(_interrupted_note(run))
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


def _interrupted_note(run: Run) -> str:
    done = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in run.report.seconds.items())
    notes = [f"absorb of {run.doc.source} interrupted after {done}: no adapter was stored."]
    if run.world.size > 1:  # mlx.launch ends every rank with SIGTERM once one of them stopped
        notes = [f"{run.world}: absorb of {run.doc.source} stopped by a signal (here, or from "
                 f"mlx.launch once another rank stopped) after {done}: no adapter was stored."]
    for task in tasks_named(run.settings.train.tasks):
        notes.append(task.interrupted(run.doc, run.gen or run.lm, run.settings))
    if run.checkpoint is not None and (state := run.checkpoint.state()):
        notes.append(f"Training was checkpointed at step {state['step']}; the same command "
                     "again resumes there.")
    return " ".join(n for n in notes if n)


def _phase_peak(report: AbsorbReport, phase: str) -> None:
    report.peak_memory[phase] = mx.get_peak_memory() / 1e9
    mx.reset_peak_memory()


def _train(run: Run, ready: list[Sample], arriving: dict[str, Arriving]) -> TrainReport:
    """Train on the samples `ready` and on those `arriving` as the generator writes them."""
    t, report = run.settings.train, run.report
    recited = t.recite_epochs or t.epochs
    views = sum(recited if s.kind == "recite" else t.epochs for s in ready)
    estimate = (views + sum(a.expected() for a in arriving.values()) * t.epochs) // t.batch_size + 1
    with run.progress.bar("train", estimate) as update:
        def on_step(i, n, loss, tokens):  # this run's steps of `n`, this run's tokens
            made = "".join(f", {name} {a.made()}" for name, a in arriving.items())
            update(i, tokens, f"loss {loss:.3f}{made}", total=n)

        start = time.perf_counter()
        try:
            train_report = train(run.lm.model, ready, t, _pad_id(run.lm.tokenizer), on_step,
                                 arriving=_arriving(arriving, bool(ready), report),
                                 longest=max([a.longest for a in arriving.values()], default=0),
                                 total=estimate, checkpoint=run.checkpoint, world=run.world)
        except Diverged:
            if run.checkpoint is not None:
                run.checkpoint.remove()  # it may hold the weights that diverged
            raise
    elapsed = time.perf_counter() - start
    times = report.seconds
    times["train"] = elapsed - (times.get("synthesize", 0.0) if report.pipeline else 0.0)
    return train_report


def _arriving(arriving: dict[str, Arriving], ready: bool,
              report: AbsorbReport) -> Iterator[list[Sample]]:
    """The arriving samples for `train`: those at hand first, then one step of each source's
    work per `next()` and the samples it finished; at the end, what each made is reported."""
    times = report.seconds
    yield [s for a in arriving.values() for s in a.take()]
    while working := [a for a in arriving.values() if not a.done]:
        for source in working:
            start = time.perf_counter()
            source.step()
            times["synthesize"] = times.get("synthesize", 0.0) + time.perf_counter() - start
        yield [s for a in arriving.values() for s in a.take()]
    for name, source in arriving.items():
        report.samples[name] = source.made()
        source.finish()
    if not ready and not any(a.made() for a in arriving.values()):
        raise LiftError("nothing to train on: no QA pairs were kept and recite is off; "
                        "add recite to --tasks or use a stronger --generator")


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


class Reading:
    """The plain base model answering questions about a document that it reads in its prompt:
    the passages that match the question (the head+tail view with `retrieve` off), or the
    question alone where it names nothing of the document; nothing is absorbed. What `ask`
    does by default on a model for which this was measured best (models/presets.json), and
    what `Absorbing` does until its adapter is ready."""

    def __init__(self, document, model: str | LoadedModel | None = None):
        self.document = document if isinstance(document, Document) else read_document(document)
        self.lm = as_model(model)
        reset_adapter(self.lm)
        self._base = base_view(self.lm.model)  # untouched by an adapter trained meanwhile
        self._doc_tokens = document_tokens(self.lm.tokenizer, self.document)
        self._indexes: dict[int, PassageIndex] = {}  # passage length -> its passages

    def prompt(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> list[int]:
        return self._prompt(question, replace(settings or AnswerSettings(), **changes))[0]

    def sources(self, question: str, settings: AnswerSettings | None = None,
                **changes) -> list[Passage]:
        """The retrieved passages the prompt for `question` holds (see `Absorbed.sources`)."""
        return self._prompt(question, replace(settings or AnswerSettings(), **changes))[1]

    def _prompt(self, question: str, settings: AnswerSettings) -> tuple[list[int], list]:
        settings = replace(settings, context=about_document(question, self.document.text))
        index = None
        if settings.context and settings.retrieve:
            index = self._indexes.get(settings.passage_len)
            if index is None:
                index = self._indexes[settings.passage_len] = passage_index(
                    self.lm.tokenizer, self.document.text, settings.passage_len)
        return document_prompt(self.lm.tokenizer, question, self._doc_tokens, settings,
                               self.lm.window, index)

    def stream(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> Iterator[str]:
        """Yield the plain base's answer as it is generated."""
        settings = replace(settings or AnswerSettings(), **changes)
        ids = self._prompt(question, settings)[0]
        yield from stream_answer(self._base, self.lm.tokenizer, ids, settings.max_tokens,
                                 settings.temp)

    def ask(self, question: str, settings: AnswerSettings | None = None, **kwargs) -> str:
        return "".join(self.stream(question, settings, **kwargs))

    def answered_by(self, question: str, settings: AnswerSettings | None = None) -> str:
        if not about_document(question, self.document.text):
            return "the plain base model (the question names nothing of the document)"
        return PLAIN_READER


class Absorbing(Reading):
    """An absorb running in a background thread, answering questions meanwhile.

    Until the adapter is ready, answers come at once from the plain base reading the document
    (`Reading`); once it is ready, as `Absorbed` answers.
    """

    def __init__(self, document, model: str | LoadedModel | None = None, **absorb_kwargs):
        if distributed.world().size > 1:  # its answers would come from every rank at once
            raise LiftError("answering while the adapter trains (--now) runs in one process; "
                            "under mlx.launch, absorb or ask without --now")
        super().__init__(document, model)
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

    def sources(self, question: str, settings: AnswerSettings | None = None,
                **changes) -> list[Passage]:
        settings = replace(settings or AnswerSettings(), **changes)
        if self.ready:
            return self.wait().sources(question, settings)
        return super().sources(question, settings)

    def _prompt(self, question: str, settings: AnswerSettings) -> tuple[list[int], list]:
        if self.ready:
            return self.wait().prompt(question, settings), []
        return super()._prompt(question, settings)

    def stream(self, question: str, settings: AnswerSettings | None = None,
               **changes) -> Iterator[str]:
        """Yield the answer: from the adapter when it is ready, else from the base at once."""
        settings = replace(settings or AnswerSettings(), **changes)
        if self.ready:
            yield from self.wait().stream(question, settings)
            return
        yield from super().stream(question, settings)

    def answered_by(self, question: str, settings: AnswerSettings | None = None) -> str:
        """Which model answers `question` now (see `Absorbed.answered_by`)."""
        if self.ready:
            return self.wait().answered_by(question, settings)
        if about_document(question, self.document.text):
            return ("the plain base model with the document in the prompt (the adapter is "
                    "training)")
        return super().answered_by(question, settings)
