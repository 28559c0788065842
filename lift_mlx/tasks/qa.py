"""`qa`: question/answer pairs about the document written by the generator model (the paper's
core task), generated step by step while training runs, kept in the QA cache as they finish so
an interrupted absorb resumes, and in the cache when done so the same document and generator
never generate twice."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .. import store
from ..generator_styles import GeneratorStyle, QAPair, resolve_style
from ..ingest import Document
from ..models import LoadedModel
from ..samples import Sample, qa_sample
from ..synthesize import (
    FILTER_VERSION,
    QAStream,
    SynthReport,
    generator_requests,
    question_key,
    task_windows,
)
from .base import Arriving, Task, TaskInput

if TYPE_CHECKING:  # config lists the task kinds: it imports this package
    from ..config import Settings, SynthSettings


class QA(Task):
    name = "qa"
    help = "generated question/answer pairs"
    order = 1

    def arriving(self, given: TaskInput) -> Arriving:
        return QAPairs(given)

    def interrupted(self, doc: Document, generator: LoadedModel, settings: Settings) -> str:
        path = cache_file(doc.sha256, generator, settings)
        try:
            cached = load_cached(path)
        except (OSError, ValueError, KeyError):
            cached = None
        partial, finished = load_partial(partial_file(path))
        if cached is not None:
            return f"Its {len(cached)} QA pairs are cached; the same command again reuses them."
        if finished:
            return (f"{len(finished)} generator requests were done and their {len(partial)} "
                    "QA pairs kept; the same command again resumes from there.")
        return "No QA pairs were cached yet."


TASK = QA()


class QAPairs(Arriving):
    """The QA samples of a document: from the cache, or generated step by step (`QAStream`).

    Across ranks (`given.world`) every rank starts from what rank 0's store holds, generates
    its share of the requests left, and once all are done the ranks put their pairs together
    in request order (`_gather`), the same on each; rank 0 caches them.
    """

    def __init__(self, given: TaskInput):
        settings, gen, progress = given.settings, given.generator, given.progress
        world = self.world = given.world
        self.given = given
        self.progress = progress
        self.style = resolve_style(settings.synth.style, gen.model)
        self.path = cache_file(given.doc.sha256, gen, settings)
        self.partial = partial_file(self.path)
        self.pairs: list[QAPair] = []
        self.fresh: list[QAPair] = []  # pairs not yet handed to training
        self.stream = None
        self.longest = (len(qa_sample(given.tokenizer, "", "", given.qa.view))
                        + settings.synth.max_tokens)
        cached, finished = None, frozenset()
        if world.rank == 0:
            cached = load_cached(self.path)
            if cached is None:  # pairs of an interrupted run, kept as its requests finished
                self.pairs, finished = load_partial(self.partial)
        if world.size > 1:
            cached, self.pairs, finished = _from_first(world, cached, self.pairs, finished)
        if cached is not None:
            progress.log(f"Using {len(cached)} cached QA pairs")
            self.pairs = self.fresh = list(cached)
            self.report = SynthReport(kept=len(cached), cached=True)
            return
        windows = task_windows(given.doc.text, settings.synth.sentences_per_task,
                               settings.synth.window_chars)
        self.windows = len(windows)
        self.fresh = list(self.pairs)
        if finished:
            progress.log(f"Resuming QA generation: {len(finished)} requests done, "
                         f"{len(self.pairs)} pairs kept")
        if world.size > 1:  # this rank's share of the requests left: the others' count as done
            every = range(len(generator_requests(windows, settings.synth, self.style)))
            left = [i for i in every if i not in finished]
            finished = frozenset(every) - frozenset(left[world.rank::world.size])
        self.stream = QAStream(given.generator_model, gen.tokenizer, windows, settings.synth,
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
        if self.world.size > 1:  # the ranks' pairs come together once every rank is done
            if self.stream.done:
                self._gather()
            return
        self.pairs += new
        self.fresh += new
        if self.stream.done:
            self.report = self.stream.close()
            store.write_atomic(self.path, cached_json(self.pairs, self.report))
            self.partial.unlink(missing_ok=True)
        elif self.stream.finished > before:
            store.write_atomic(self.partial, partial_json(self.pairs, self.stream.finished_ids))

    def _gather(self) -> None:
        """Every rank's kept pairs put together, the same on every rank (`merge_shares`)."""
        report = self.stream.close()
        shares = self.world.gather({"kept": {i: [asdict(p) for p in kept] for i, kept
                                             in self.stream.kept_by_request.items()},
                                    "report": asdict(report)})
        new, self.report = merge_shares(shares, {question_key(p.question) for p in self.pairs})
        self.pairs += new
        self.fresh += new
        if self.world.rank == 0:
            store.write_atomic(self.path, cached_json(self.pairs, self.report))
            self.partial.unlink(missing_ok=True)

    def take(self) -> list[Sample]:
        fresh, self.fresh = self.fresh, []
        return self.given.qa(fresh)

    def expected(self) -> int:
        if self.done:
            return len(self.pairs)
        synth = self.given.settings.synth
        return self.windows * synth.qa_per_sentence * synth.sentences_per_task

    def made(self) -> int:
        return len(self.pairs)

    def run(self) -> None:
        if self.done:
            return
        with self.progress.bar("tasks", len(self.stream.requests), unit="tok") as update:
            while not self.done:
                self.step()
                update(self.stream.finished, self.stream.report.generated_tokens)

    def finish(self) -> None:
        if not self.pairs and self.world.rank == 0:  # across ranks, rank 0 says it once
            self.progress.warn(
                "the generator wrote no usable question/answer pairs "
                f"({_drops(self.report)}); training continues on the other tasks. "
                "A stronger generator (--generator) gives the QA tasks LIFT relies on."
            )


def _pairs(data: list[dict]) -> list[QAPair]:
    return [QAPair(d["question"], d["answer"]) for d in data]


def _from_first(world, cached: list[QAPair] | None, partial: list[QAPair],
                finished: frozenset[int]) -> tuple[list[QAPair] | None, list[QAPair],
                                                   frozenset[int]]:
    """Rank 0's cached pairs, or its interrupted run's pairs and finished requests, on every
    rank (a rank's own store may hold other ones, or none)."""
    first = world.first({"cached": None if cached is None else [asdict(p) for p in cached],
                         "partial": [asdict(p) for p in partial], "finished": sorted(finished)})
    return (None if first["cached"] is None else _pairs(first["cached"]),
            _pairs(first["partial"]), frozenset(first["finished"]))


def merge_shares(shares: list[dict], seen: set[str]) -> tuple[list[QAPair], SynthReport]:
    """The ranks' shares of a generation ({"kept": {request: pairs}, "report": SynthReport as
    a dict}) as one: the pairs request by request in request order, a question that `seen` or
    an earlier request holds dropped as a duplicate (as one process drops it); the work
    summed, the time the longest rank's."""
    reports = [SynthReport(**share["report"]) for share in shares]
    merged = SynthReport(requests=reports[0].requests)
    for r in reports:
        merged.generated_tokens += r.generated_tokens
        merged.prompt_tokens += r.prompt_tokens
        merged.decode_steps += r.decode_steps
        merged.kept += r.kept
        merged.seconds = max(merged.seconds, r.seconds)
        for reason, n in r.dropped.items():
            merged.drop(reason, n)
    by_request = {int(i): kept for share in shares for i, kept in share["kept"].items()}
    seen, pairs = set(seen), []
    for pair in (p for i in sorted(by_request) for p in _pairs(by_request[i])):
        if question_key(pair.question) in seen:
            merged.drop("duplicate")
            merged.kept -= 1
        else:
            seen.add(question_key(pair.question))
            pairs.append(pair)
    return pairs, merged


def _drops(report: SynthReport) -> str:
    if report.cached:
        return "cached from an earlier run of the same generator on this document"
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items()))
    return f"{report.requests} requests; dropped: {dropped or 'none'}"


def cache_file(doc_sha: str, gen: LoadedModel, settings: Settings) -> Path:
    """Where the QA pairs that generator `gen` writes about a document are cached."""
    style = resolve_style(settings.synth.style, gen.model)
    return store.qa_cache_path(cache_key(doc_sha, gen.fingerprint, settings.synth, style))


def partial_file(cache: Path) -> Path:
    """Where an unfinished generation keeps the pairs of its finished requests."""
    return cache.with_name(cache.stem + ".partial.json")


def cache_key(doc_sha: str, generator_fingerprint: str, settings: SynthSettings,
              style: GeneratorStyle) -> str:
    """Cached pairs are keyed on the document, the generator, the settings, the style's
    version and the filter's (so a new prompt or filter rule never serves pairs written or
    kept under the old one)."""
    blob = json.dumps(
        [doc_sha, generator_fingerprint, style.version, asdict(settings), FILTER_VERSION],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_cached(path: Path) -> list[QAPair] | None:
    if not path.is_file():
        return None
    return _pairs(json.loads(path.read_text())["qa_pairs"])


def load_partial(path: Path) -> tuple[list[QAPair], frozenset[int]]:
    """The pairs and finished request numbers an interrupted generation left (none if none)."""
    try:
        data = json.loads(path.read_text())
        return ([QAPair(d["question"], d["answer"]) for d in data["qa_pairs"]],
                frozenset(data["finished"]))
    except (OSError, ValueError, KeyError, TypeError):
        return [], frozenset()


def partial_json(pairs: list[QAPair], finished: list[int]) -> str:
    """What an interrupted generation leaves for the next run (`load_partial` reads it)."""
    return json.dumps({"qa_pairs": [asdict(p) for p in pairs], "finished": finished})


def cached_json(pairs: list[QAPair], report: SynthReport) -> str:
    """A finished generation's QA cache file (`load_cached` reads it)."""
    return json.dumps({"qa_pairs": [asdict(p) for p in pairs], "report": asdict(report)},
                      indent=1)
