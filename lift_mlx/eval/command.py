"""`lift-mlx eval`: the command, its options, and the parsing of --lengths and --depths."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import click

from .. import backend, prompts
from ..absorbed import reset_adapter
from ..config import preset
from ..errors import LiftError
from ..models import LoadedModel, load_model
from ..options import model_option, pop_settings, setting_options
from ..presets import recommended_settings
from ..progress import Progress
from ..sources import resolve_model
from .arms import ARMS
from .datasets import FORMATS, EvalDoc, load_eval_set
from .judge import judge_records
from .niah import DEFAULT_DEPTHS, DEFAULT_NEEDLES, niah_set
from .run import DEFAULT_MAX_TOKENS, run_eval, select
from .summary import SUMMARY_FILE, format_summary, summarize


def parse_lengths(text: str) -> list[int]:
    """'1k,2k,4096' or '1.5k' -> token counts (k = 1024 tokens)."""
    lengths = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", part)
        n = int(float(m.group(1)) * (1024 if m.group(2) else 1)) if m else 0
        if n <= 0 or (not m.group(2) and "." in m.group(1)):
            raise LiftError(f"bad length {part!r}; use token counts like 1k,2k,4096")
        lengths.append(n)
    if not lengths:
        raise LiftError("no lengths given; use e.g. --lengths 1k,2k,4k")
    return lengths


def parse_depths(text: str) -> list[float]:
    """'0,0.5,1' or '0%,50%,100%' -> fractions of the document."""
    depths = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            depths.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
        except ValueError:
            raise LiftError(f"bad depth {part!r}; use fractions like 0,0.5,1 or 0%,50%,100%"
                            ) from None
    if not depths:
        raise LiftError("no depths given; use e.g. --depths 0,0.5,1")
    return depths


def _niah_docs(lm: LoadedModel, lengths: str, depths: str | None) -> list[EvalDoc]:
    labels = [p.strip() for p in lengths.split(",") if p.strip()]
    sizes = parse_lengths(lengths)
    docs = niah_set(sizes, parse_depths(depths) if depths else DEFAULT_DEPTHS, DEFAULT_NEEDLES,
                    lambda text: len(prompts.encode(lm.tokenizer, text)))
    by_size = dict(zip(sizes, labels, strict=True))
    for doc in docs:  # one summary row per length: the paper's NIAH table
        for q in doc.questions:
            q.type = f"niah-{by_size[q.meta['length']]}"
    return docs


def _doc_ids(values: tuple[str, ...], docs: Sequence[EvalDoc]) -> list[str] | None:
    if not values:
        return None
    known = {d.id for d in docs}
    ids = []
    for value in values:  # LooGLE titles may hold commas: a whole known id is kept whole
        ids += [value] if value in known else [v.strip() for v in value.split(",") if v.strip()]
    return ids


def _default_out(data: str, lm: LoadedModel, identity: str) -> Path:
    stem = "niah" if data == "niah" else Path(data).stem
    model = Path(lm.name.rstrip("/")).name
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return Path("eval-results") / f"{stem}-{model}-{digest}"


def _arms_help() -> str:
    """The arms' lines in the help, one per entry of the table: its name, how it answers."""
    width = max(map(len, ARMS))
    return "\n".join(f"  {name:<{width}}  {arm.help}" for name, arm in ARMS.items())


def _in_words(n: int) -> str:
    """A count as the help says it: "all five" arms."""
    words = "zero one two three four five six seven eight nine ten".split()
    return words[n] if n < len(words) else str(n)


# The command's help, its user manual; {arms} comes from the arms table.
EVAL_HELP = """Compare LIFT with in-context answering on the same questions.

DATA is an evaluation set in JSONL: LooGLE (one document per line: input, title,
qa_pairs), LongBench (one question per line: context, input, answers) or native
(id, document or document_path, questions: [{{question, answers}}]); or the word
`niah` for needle-in-a-haystack documents built here (--lengths, --depths).

\b
Arms, all with the same prompt wording and greedy decoding:
{arms}
Each document is absorbed once per adapter and the adapter is reused across its
questions, its arms and later runs (the adapter store).

\b
The results folder holds:
  records.jsonl     one line per question and arm: prediction, references,
                    scores (f1, em, contains, rouge_l; keyword_match; accuracy), seconds
  absorbs.jsonl     each adapter made or reused: its time, steps, tokens, peak memory
  judgements.jsonl  the --judge's replies and 0/1 verdicts
  summary.json      the table printed at the end
Records are written as they are made; run the same command again after an
interruption and it answers only what is missing.

Scores are means over the questions each metric applies to, per arm and question
type; the judge's verdicts are reported in their own column, never mixed into them.

\b
Examples:
  lift-mlx eval loogle_shortdep_qa.jsonl --model qwen-1.5b --limit 5
  lift-mlx eval longbench/narrativeqa.jsonl --docs 0a1b2c,3d4e5f --arms icl-trunc,lift
  lift-mlx eval niah --lengths 1k,8k --depths 0,0.5,1 --arms icl-trunc,lift
"""


def eval_command() -> click.Command:
    """The `lift-mlx eval` command (cli.py builds it only when it runs)."""

    def arms_option(ctx, param, value):
        arms = [a.strip() for a in value.split(",") if a.strip()]
        bad = [a for a in arms if a not in ARMS]
        if bad or not arms:
            raise click.BadParameter(f"use a comma-separated subset of {','.join(ARMS)}")
        return tuple(dict.fromkeys(arms))

    @click.command("eval", help=EVAL_HELP.format(arms=_arms_help()))
    @click.argument("data", metavar="DATA")
    @model_option
    @click.option("--arms", default=",".join(ARMS), callback=arms_option, metavar="LIST",
                  help="Arms to run, comma-separated (see above). "
                       f"[default: all {_in_words(len(ARMS))}]")
    @click.option("--format", "fmt", type=click.Choice(["auto", *FORMATS]), default="auto",
                  show_default=True, help="Format of DATA; auto reads it from the first line.")
    @click.option("--limit", type=click.IntRange(min=1), default=None,
                  help="Only the first N questions of each document.")
    @click.option("--docs", multiple=True, metavar="IDS",
                  help="Only these documents: ids, comma-separated; may be repeated.")
    @click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
                  default=None,
                  help="Results folder. [default: ./eval-results/DATA-MODEL-HASH, HASH from "
                       "the model and settings, so a rerun resumes there]")
    @click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS,
                  show_default=True,
                  help="Longest answer, in tokens; also the part of the window kept free "
                       "for it. LongBench uses 512 for its summary subsets.")
    @click.option("--window", type=click.IntRange(min=2), default=None,
                  help="Tokens the prompt may fill, answer included. [default: the model's "
                       "window] Set it lower to play a short-context model, as the paper does "
                       "with 8k-token Llama-3.")
    @click.option("--judge", default=None, metavar="M",
                  help="Also have local model M say True/False on each answer against its "
                       "references, as LooGLE's GPT-4 judge does (may be the --model).")
    @click.option("--lengths", default="1k,2k,4k,8k", show_default=True, metavar="LIST",
                  help="NIAH only: document lengths in tokens (k = 1024), up to 128k.")
    @click.option("--depths", default=None, metavar="LIST",
                  help="NIAH only: needle depths as fractions or percentages (0,0.5,1 or "
                       "0%,50%,100%). [default: 10 depths from 0 to 1]")
    @setting_options
    def command(data, model, arms, fmt, limit, docs, out, max_tokens, window, judge, lengths,
                depths, **opts):
        overrides = pop_settings(opts, model)
        progress = Progress(quiet=opts["quiet"])
        backend.warn_if_slow_blas()
        lm = load_model(model)
        settings = preset(opts["preset_name"], recommended_settings(lm.name), **overrides)
        if data == "niah":
            all_docs = _niah_docs(lm, lengths, depths)
        else:
            all_docs = load_eval_set(data, fmt)
        chosen = select(all_docs, _doc_ids(docs, all_docs), limit)
        generator = None
        if opts["generator"] and "qa" in settings.train.tasks:
            generator = load_model(opts["generator"])
        identity = json.dumps([lm.fingerprint, settings.to_dict(), max_tokens, window,
                               generator.fingerprint if generator else "self"])
        out = out or _default_out(data, lm, identity)
        records = run_eval(chosen, lm, out, arms=arms, settings=settings,
                           max_tokens=max_tokens, window=window, generator=generator,
                           reuse=not opts["force"], pipeline=opts["pipeline"],
                           progress=progress)
        judgements = []
        if judge:
            reset_adapter(lm)
            same = resolve_model(judge).resolve() == Path(lm.path).resolve()
            judge_lm = lm if same else load_model(judge)
            judgements = judge_records(records, judge_lm, out, progress)
        summary = summarize(records, judgements)
        Path(out, SUMMARY_FILE).write_text(json.dumps(
            {"data": data, "model": lm.name, "arms": list(arms), "max_tokens": max_tokens,
             "window": window or lm.window, "judge": judge, "summary": summary}, indent=2))
        click.echo(format_summary(summary))
        click.echo(f"results: {out}", err=True)

    return command
