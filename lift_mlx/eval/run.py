"""Running an evaluation: the same questions answered by each arm (in-context baselines, LIFT,
fine-tuning on raw text), scored offline and recorded per question as they are made.

Every arm builds its prompt with `answer.question_prompt` and decodes greedily, so arms differ
only in what the paper varies: the adapter and whether the prompt holds the document.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .. import __version__, prompts
from ..absorb import absorb
from ..absorbed import reset_adapter
from ..answer import PromptCache, backing, context_budget, document_prompt, stream_answer
from ..config import AnswerSettings, Settings
from ..errors import LiftError
from ..ingest import text_document
from ..models import LoadedModel
from ..progress import Progress
from ..retrieval import Passage, PassageIndex, passage_index
from .arms import ADAPTERS, ARMS
from .datasets import EvalDoc, Question
from .metrics import score
from .records import JsonlLog, read_jsonl, record_key

# LongBench's summary subsets (gov_report, multi_news) have no question: the task is in
# LongBench's prompt template. Their records ask this instead.
SUMMARY_QUESTION = "Write a one-page summary of the document."
DEFAULT_MAX_TOKENS = 128  # LongBench's budget for QA subsets; its summaries use 512
RECORDS_FILE = "records.jsonl"  # one line per (document, question, arm)
ABSORBS_FILE = "absorbs.jsonl"  # one line per adapter made or reused
RUN_FILE = "run.json"  # model and settings the folder's records were made with


def _check_run(out: Path, identity: dict) -> None:
    """Refuse to mix results of different models or settings in one folder."""
    path = out / RUN_FILE
    if path.exists():
        before = json.loads(path.read_text())
        if isinstance(before.get("answer"), dict):  # written while `check` was part of it
            before["answer"].pop("check", None)
        if isinstance(before.get("settings"), dict):  # written before a setting existed: the
            before["settings"] = _filled(before["settings"])  # default it came in with
        for key, value in identity.items():
            if before.get(key) != value:
                raise LiftError(
                    f"{out} holds results made with another {key} ({before.get(key)!r:.60}); "
                    "pass the same options to resume, or another --out"
                )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**identity, "lift_mlx_version": __version__}, indent=2))


def _filled(settings: dict) -> dict:
    """A run's stored settings with every setting added since at its default (which keeps
    what was done before it existed); as stored where they no longer read as settings."""
    try:
        return Settings.from_dict(settings).to_dict()
    except (TypeError, ValueError, LiftError):
        return settings


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
            window: int, answering: AnswerSettings, cache: PromptCache | None = None,
            index: PassageIndex | None = None, tok=None) -> dict:
    """Answer one question in one arm, as `answering` says (its context is the arm's); the
    arm's adapter (or none) is already on the model, `tok` builds its prompts (the
    adapter's `prompts.prompt_tokenizer`; the model's tokenizer where None)."""
    tok = tok or lm.tokenizer
    record = _record(doc, q, arm)
    asked = record["question"]
    overhead = len(prompts.chat_ids(tok, prompts.question_body(tok, asked, [])))
    room = context_budget(tok, asked, window, answering.max_tokens)
    record["doc_tokens"] = len(doc_tokens)
    if ARMS[arm].whole and len(doc_tokens) > room:
        return {**record, "skipped": f"document has {len(doc_tokens)} tokens, the window "
                f"leaves room for {max(room, 0)}", "prediction": None, "scores": {}}
    ids, held = document_prompt(tok, asked, doc_tokens, answering, window, index)
    if held:
        record["context"] = "passages"
        record["passages"] = [[p.start, p.end] for p in held]
    elif not answering.context or len(ids) < overhead:
        record["context"] = "none"
    else:  # the view, also where no passage shares a term with the question (as `ask` does)
        record["context"] = "full" if len(ids) - overhead == len(doc_tokens) else "head+tail"
    start = time.perf_counter()
    prediction = "".join(stream_answer(lm.model, lm.tokenizer, ids, answering.max_tokens,
                                       temp=answering.temp, cache=cache))
    return {**record, "prompt_tokens": len(ids), "prediction": prediction,
            "scores": score(prediction, q), "seconds": round(time.perf_counter() - start, 4)}


def _checked(doc: EvalDoc, q: Question, arm: str, memory: dict, reading: dict,
             text: str) -> dict:
    """`arm`'s record, made from its two arms' records (`Arm.checks`): the memory arm's
    answer where a passage the reading arm's prompt held backs it, else the reading arm's
    answer; the seconds of both where both were needed, as `--check` spends them."""
    held = [Passage(a, b, text[a:b], ()) for a, b in reading.get("passages", [])]
    source = backing(memory["prediction"], q.question, held)
    chosen = memory if source is not None else reading
    seconds = memory["seconds"] + (0.0 if source is not None else reading["seconds"])
    return {**_record(doc, q, arm), "doc_tokens": reading["doc_tokens"],
            "context": reading["context"], "passages": reading.get("passages", []),
            "prompt_tokens": chosen["prompt_tokens"], "prediction": chosen["prediction"],
            "answered_by": "memory" if source is not None else "reading",
            "adapter": memory.get("adapter"), "scores": score(chosen["prediction"], q),
            "seconds": round(seconds, 4)}


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
    answer: AnswerSettings | None = None,
) -> list[dict]:
    """Answer every question of `docs` in every arm, appending records to out/records.jsonl.

    Records already in the folder are kept, not redone, so a rerun resumes. `window` caps the
    prompt (default: the model's). `pipeline` is absorb's: train while QA tasks are written,
    or write them all first. `answer`: the retrieved passages' sizes (`retrieved_len`,
    `passage_len`; the defaults where None); every arm decodes greedily, with its own
    context. Returns the records of `docs` x `arms`, old and new.
    """
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise LiftError(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    asked = list(arms)  # what the caller gets back; `arms`: also what a checked arm needs
    arms = list(dict.fromkeys(a for arm in asked for a in (*(ARMS[arm].checks or ()), arm)))
    settings = settings or Settings()
    window = window or lm.window
    if not max_tokens < window <= lm.window:
        raise LiftError(f"the window ({window} tokens) must be larger than --max-tokens "
                        f"({max_tokens}) and at most the model's window ({lm.window})")
    base = answer or AnswerSettings()
    answering = {arm: dataclasses.replace(base, max_tokens=max_tokens, temp=0.0,  # greedy
                                          context=ARMS[arm].context,
                                          retrieve=ARMS[arm].retrieve,
                                          **({"view_len": window} if ARMS[arm].whole else {}))
                 for arm in arms}
    out = Path(out)
    _check_run(out, {"model": lm.fingerprint, "settings": settings.to_dict(),
                     "max_tokens": max_tokens, "window": window,
                     # `check` is the arms' own (`Arm.checks`): folders made before it resume
                     **({"answer": {k: v for k, v in dataclasses.asdict(base).items()
                                    if k != "check"}} if answer else {}),
                     "generator": generator.fingerprint if generator else "self"})
    progress = progress or Progress(quiet=True)
    records = JsonlLog(out / RECORDS_FILE)
    absorbs = JsonlLog(out / ABSORBS_FILE)
    done = {record_key(r): r for r in read_jsonl(records.path)}  # key -> its record
    try:
        for i, doc in enumerate(docs, start=1):
            todo = [(q, arm) for q in doc.questions for arm in arms
                    if (doc.id, q.id, arm) not in done]
            if not todo:
                continue
            progress.log(f"[{i}/{len(docs)}] {doc.id}: {len(todo)} answers to make")
            document = text_document(doc.document, f"{doc.source}:{doc.id}")
            doc_tokens = prompts.encode(lm.tokenizer, document.text)
            index = None
            if any(ARMS[arm].retrieve for _, arm in todo):
                index = passage_index(lm.tokenizer, document.text, base.passage_len)
            for kind in dict.fromkeys(a.adapter for a in ARMS.values()):  # one at a time
                # Arm by arm, so that consecutive prompts share their document view.
                batch = sorted([(q, arm) for q, arm in todo
                                if ARMS[arm].adapter == kind and not ARMS[arm].checks],
                               key=lambda qa: arms.index(qa[1]))
                if not batch:
                    continue
                prompting = lm.tokenizer
                if kind is None:
                    reset_adapter(lm)
                else:
                    start = time.perf_counter()
                    trained = ADAPTERS[kind](settings)
                    prompting = prompts.prompt_tokenizer(lm.tokenizer, trained.train.system_prompt)
                    absorbed = absorb(document, lm, settings=trained,
                                      generator=generator, reuse=reuse, pipeline=pipeline,
                                      progress=progress)
                    report = absorbed.report
                    absorbs.write({
                        "doc_id": doc.id, "adapter": kind, "path": str(absorbed.adapter_path),
                        "reused": report.reused, "pipeline": report.pipeline,
                        "train_steps": report.train.steps,
                        "trained_tokens": report.train.tokens,
                        "qa_pairs": report.samples["qa"], "cloze_pairs": report.samples["cloze"],
                        "peak_memory_gb": round(report.peak_memory_gb, 3),
                        "seconds": round(time.perf_counter() - start, 3)})
                cache = PromptCache(lm.model)  # one per adapter: it holds that model's keys
                # A bar per adapter: absorb draws its own bars and must not run inside one.
                with progress.bar("answers", len(batch), unit="answers") as update:
                    for n, (q, arm) in enumerate(batch, start=1):
                        record = _answer(lm, doc, q, arm, doc_tokens, window,
                                         answering[arm], cache, index, prompting)
                        if kind is not None:
                            record["adapter"] = absorbed.adapter_path.name
                        records.write(record)
                        done[doc.id, q.id, arm] = record
                        update(n, n, arm)
            for q, arm in todo:
                if ARMS[arm].checks:
                    memory, reading = (done[doc.id, q.id, a] for a in ARMS[arm].checks)
                    record = _checked(doc, q, arm, memory, reading, document.text)
                    records.write(record)
                    done[doc.id, q.id, arm] = record
    finally:
        records.close()
        absorbs.close()
        reset_adapter(lm)  # hand the caller back the plain base
    wanted = {(d.id, q.id, a) for d in docs for q in d.questions for a in asked}
    return [r for r in read_jsonl(records.path) if record_key(r) in wanted]
