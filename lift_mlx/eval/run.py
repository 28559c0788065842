"""Evaluation: the same questions answered by each arm (in-context baselines, LIFT, fine-tuning
on raw text), scored offline, recorded per question and summarised per arm and question type.

Every arm builds its prompt with `answer.question_prompt` and decodes greedily, so arms differ
only in what the paper varies: the adapter and whether the prompt holds the document.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import click

from .. import __version__, prompts
from ..answer import PromptCache, context_budget, question_prompt, stream_answer
from ..config import Settings
from ..errors import LiftError
from ..models import LoadedModel
from ..options import model_option, pop_settings, setting_options
from ..progress import Progress
from .datasets import FORMATS, EvalDoc, Question, load_eval_set
from .metrics import score
from .records import JsonlLog, read_jsonl, record_key

# arm -> (adapter it answers with, whether the prompt holds a head+tail view of the document)
ARMS: dict[str, tuple[str | None, bool]] = {
    "icl-trunc": (None, True),  # plain base, document truncated to the window
    "icl-full": (None, True),  # plain base, whole document; skipped where it does not fit
    "lift": ("lift", False),  # the document's adapter, question alone
    "lift+icl": ("lift", True),  # the same adapter, head+tail view in the prompt
    "raw-ft": ("raw-ft", False),  # adapter trained on recite segments only (paper's baseline)
}
# LongBench's summary subsets (gov_report, multi_news) have no question: the task is in
# LongBench's prompt template. Their records ask this instead.
SUMMARY_QUESTION = "Write a one-page summary of the document."
DEFAULT_MAX_TOKENS = 128  # LongBench's budget for QA subsets; its summaries use 512
RECORDS_FILE = "records.jsonl"  # one line per (document, question, arm)
ABSORBS_FILE = "absorbs.jsonl"  # one line per adapter made or reused
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"  # model and settings the folder's records were made with


def _check_run(out: Path, identity: dict) -> None:
    """Refuse to mix results of different models or settings in one folder."""
    path = out / RUN_FILE
    if path.exists():
        before = json.loads(path.read_text())
        for key, value in identity.items():
            if before.get(key) != value:
                raise LiftError(
                    f"{out} holds results made with another {key} ({before.get(key)!r:.60}); "
                    "pass the same options to resume, or another --out"
                )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**identity, "lift_mlx_version": __version__}, indent=2))


# --- answering ----------------------------------------------------------------------------------


def select(docs: Sequence[EvalDoc], doc_ids: Iterable[str] | None = None,
           limit: int | None = None) -> list[EvalDoc]:
    """The documents named in `doc_ids` (all if None), each with its first `limit` questions."""
    if doc_ids is not None:
        wanted = list(dict.fromkeys(doc_ids))
        known = {d.id for d in docs}
        missing = [i for i in wanted if i not in known]
        if missing:
            some = ", ".join(sorted(known)[:5]) + (", ..." if len(known) > 5 else "")
            raise LiftError(f"no document with id {missing[0]!r} in this set; its ids: {some}")
        docs = [d for d in docs if d.id in set(wanted)]
    if limit is not None:
        docs = [EvalDoc(d.id, d.document, d.questions[:limit], d.source) for d in docs]
    return list(docs)


def _record(doc: EvalDoc, q: Question, arm: str) -> dict:
    return {"doc_id": doc.id, "question_id": q.id, "type": q.type, "arm": arm,
            "source": doc.source, "question": q.question.strip() or SUMMARY_QUESTION,
            "references": q.answers,
            "keywords": q.keywords, "choices": q.choices, "meta": q.meta}


def _answer(lm: LoadedModel, doc: EvalDoc, q: Question, arm: str, doc_tokens: list[int],
            window: int, max_tokens: int, cache: PromptCache | None = None) -> dict:
    """Answer one question in one arm; the adapter (or none) is already on the model."""
    tok = lm.tokenizer
    with_context = ARMS[arm][1]
    record = _record(doc, q, arm)
    asked = record["question"]
    overhead = len(prompts.chat_ids(tok, prompts.question_body(tok, asked, [])))
    room = context_budget(tok, asked, window, max_tokens)
    record["doc_tokens"] = len(doc_tokens)
    if arm == "icl-full" and len(doc_tokens) > room:
        return {**record, "skipped": f"document has {len(doc_tokens)} tokens, the window "
                f"leaves room for {max(room, 0)}", "prediction": None, "scores": {}}
    ids = question_prompt(tok, asked, doc_tokens if with_context else None, window, max_tokens)
    if not with_context or len(ids) < overhead:
        record["context"] = "none"
    else:
        record["context"] = "full" if len(ids) - overhead == len(doc_tokens) else "head+tail"
    start = time.perf_counter()
    prediction = "".join(stream_answer(lm.model, tok, ids, max_tokens, temp=0.0, cache=cache))
    return {**record, "prompt_tokens": len(ids), "prediction": prediction,
            "scores": score(prediction, q), "seconds": round(time.perf_counter() - start, 4)}


def run_eval(
    docs: Sequence[EvalDoc],
    lm: LoadedModel,
    out: str | Path,
    *,
    arms: Sequence[str] = tuple(ARMS),
    settings: Settings | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    window: int | None = None,
    generator: LoadedModel | None = None,
    reuse: bool = True,
    pipeline: bool = True,
    progress: Progress | None = None,
) -> list[dict]:
    """Answer every question of `docs` in every arm, appending records to out/records.jsonl.

    Records already in the folder are kept, not redone, so a rerun resumes. `window` caps the
    prompt (default: the model's). `pipeline` is absorb's: train while QA tasks are written,
    or write them all first. Returns the records of `docs` x `arms`, old and new.
    """
    from ..absorb import absorb, reset_adapter
    from ..ingest import text_document

    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise LiftError(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    settings = settings or Settings()
    window = window or lm.window
    if not max_tokens < window <= lm.window:
        raise LiftError(f"the window ({window} tokens) must be larger than --max-tokens "
                        f"({max_tokens}) and at most the model's window ({lm.window})")
    adapters = {"lift": settings, "raw-ft": settings.replace(tasks=("recite",))}
    out = Path(out)
    _check_run(out, {"model": lm.fingerprint, "settings": settings.to_dict(),
                     "max_tokens": max_tokens, "window": window,
                     "generator": generator.fingerprint if generator else "self"})
    progress = progress or Progress(quiet=True)
    records = JsonlLog(out / RECORDS_FILE)
    absorbs = JsonlLog(out / ABSORBS_FILE)
    done = {record_key(r) for r in read_jsonl(records.path)}
    try:
        for i, doc in enumerate(docs, start=1):
            todo = [(q, arm) for q in doc.questions for arm in arms
                    if (doc.id, q.id, arm) not in done]
            if not todo:
                continue
            progress.log(f"[{i}/{len(docs)}] {doc.id}: {len(todo)} answers to make")
            document = text_document(doc.document, f"{doc.source}:{doc.id}")
            doc_tokens = prompts.encode(lm.tokenizer, document.text)
            for kind in (None, "lift", "raw-ft"):  # one adapter at a time
                # Arm by arm, so that consecutive prompts share their document view.
                batch = sorted([(q, arm) for q, arm in todo if ARMS[arm][0] == kind],
                               key=lambda qa: arms.index(qa[1]))
                if not batch:
                    continue
                if kind is None:
                    reset_adapter(lm)
                else:
                    start = time.perf_counter()
                    absorbed = absorb(document, lm, settings=adapters[kind],
                                      generator=generator, reuse=reuse, pipeline=pipeline,
                                      progress=progress)
                    report = absorbed.report
                    absorbs.write({
                        "doc_id": doc.id, "adapter": kind, "path": str(absorbed.adapter_path),
                        "reused": report.reused, "pipeline": report.pipeline,
                        "train_steps": report.train.steps,
                        "trained_tokens": report.train.tokens,
                        "qa_pairs": report.qa_samples, "cloze_pairs": report.cloze_samples,
                        "peak_memory_gb": round(report.peak_memory_gb, 3),
                        "seconds": round(time.perf_counter() - start, 3)})
                cache = PromptCache(lm.model)  # one per adapter: it holds that model's keys
                # A bar per adapter: absorb draws its own bars and must not run inside one.
                with progress.bar("answers", len(batch), unit="answers") as update:
                    for n, (q, arm) in enumerate(batch, start=1):
                        record = _answer(lm, doc, q, arm, doc_tokens, window, max_tokens,
                                         cache)
                        if kind is not None:
                            record["adapter"] = absorbed.adapter_path.name
                        records.write(record)
                        done.add((doc.id, q.id, arm))
                        update(n, n, arm)
    finally:
        records.close()
        absorbs.close()
        reset_adapter(lm)  # hand the caller back the plain base
    wanted = {(d.id, q.id, a) for d in docs for q in d.questions for a in arms}
    return [r for r in read_jsonl(records.path) if record_key(r) in wanted]


# --- summary ------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _row(records: list[dict], verdicts: dict) -> dict:
    answered = [r for r in records if r["prediction"] is not None]
    metrics: dict[str, list[float]] = {}
    for r in answered:
        for name, value in r["scores"].items():
            metrics.setdefault(name, []).append(value)
    row = {"count": len(answered), "skipped": len(records) - len(answered),
           "seconds": _mean([r["seconds"] for r in answered]) if answered else None,
           "scores": {name: _mean(v) for name, v in metrics.items()},
           "counts": {name: len(v) for name, v in metrics.items()}}
    judged = [verdicts[k] for k in map(record_key, answered) if k in verdicts]
    if judged:  # kept apart from "scores": a judge's verdict is not an offline metric
        row["judge"] = _mean(judged)
        row["judged"] = len(judged)
    return row


def summarize(records: Sequence[dict], judgements: Sequence[dict] = ()) -> dict:
    """{arm: {question type: row, "all": row}}; a row holds the answered count, the skipped
    count, mean seconds, the mean of each metric over the questions it applies to, and the
    judge's mean verdict when there is one."""
    verdicts = {record_key(j): j["score"] for j in judgements}
    summary: dict[str, dict] = {}
    for arm in [a for a in ARMS if any(r["arm"] == a for r in records)]:
        mine = [r for r in records if r["arm"] == arm]
        types = sorted({r["type"] or "untyped" for r in mine})
        summary[arm] = {t: _row([r for r in mine if (r["type"] or "untyped") == t], verdicts)
                        for t in types}
        summary[arm]["all"] = _row(mine, verdicts)
    return summary


_SHORT = {"keyword_match": "keyword"}  # table headers fit 8 columns


def format_summary(summary: dict) -> str:
    """The summary as a text table: scores in %, one row per arm and question type, and an
    "all" row for arms with several types."""
    rows = [(arm, t, row) for arm, by_type in summary.items() for t, row in by_type.items()
            if t != "all" or len(by_type) > 2]
    metrics = [m for m in ("f1", "em", "contains", "rouge_l", "keyword_match", "accuracy")
               if any(m in row["scores"] for _, _, row in rows)]
    judge = any("judge" in row for _, _, row in rows)
    type_width = max([len("type")] + [len(t) for _, t, _ in rows])
    head = f"{'arm':<10} {'type':<{type_width}} {'n':>4} {'skip':>4}"
    head += "".join(f" {_SHORT.get(m, m):>8}" for m in metrics)
    head += (f" {'judge':>6}" if judge else "") + "  s/answer"
    lines = [head]
    for arm, t, row in rows:
        line = f"{arm:<10} {t:<{type_width}} {row['count']:>4} {row['skipped']:>4}"
        for m in metrics:
            value = row["scores"].get(m)
            line += f" {'-' if value is None else f'{100 * value:.1f}':>8}"
        if judge:
            verdict = row.get("judge")
            line += f" {'-' if verdict is None else f'{100 * verdict:.1f}':>6}"
        seconds = row["seconds"]
        line += f"  {'-' if seconds is None else f'{seconds:.2f}':>9}"
        lines.append(line)
    return "\n".join(lines)


# --- the command --------------------------------------------------------------------------------


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
    from .niah import DEFAULT_DEPTHS, DEFAULT_NEEDLES, niah_set

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


def eval_command() -> click.Command:
    """The `lift-mlx eval` command (cli.py builds it only when it runs)."""

    def arms_option(ctx, param, value):
        arms = [a.strip() for a in value.split(",") if a.strip()]
        bad = [a for a in arms if a not in ARMS]
        if bad or not arms:
            raise click.BadParameter(f"use a comma-separated subset of {','.join(ARMS)}")
        return tuple(dict.fromkeys(arms))

    @click.command("eval")
    @click.argument("data", metavar="DATA")
    @model_option
    @click.option("--arms", default=",".join(ARMS), callback=arms_option, metavar="LIST",
                  help="Arms to run, comma-separated (see above). [default: all five]")
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
        """Compare LIFT with in-context answering on the same questions.

        DATA is an evaluation set in JSONL: LooGLE (one document per line: input, title,
        qa_pairs), LongBench (one question per line: context, input, answers) or native
        (id, document or document_path, questions: [{question, answers}]); or the word
        `niah` for needle-in-a-haystack documents built here (--lengths, --depths).

        \b
        Arms, all with the same prompt wording and greedy decoding:
          icl-trunc  the base model, head+tail of the document that fits the window
          icl-full   the base model, the whole document; skipped where it does not fit
          lift       the document's adapter, the question alone
          lift+icl   the same adapter, head+tail of the document in the prompt
          raw-ft     an adapter trained on the text's segments only (--tasks recite)
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
        from ..absorb import reset_adapter
        from ..config import preset
        from ..models import load_model, recommended_settings, resolve_model
        from .judge import judge_records

        overrides = pop_settings(opts)
        progress = Progress(quiet=opts["quiet"])
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
