"""A small base model trained from scratch on a knowledge world, to measure LIFT offline.

No pretrained model can be downloaded here, so this module makes one that can do the three
things LIFT asks of a base model: read a document in its prompt (the prompt `ask` builds),
answer closed-book about facts stored in its weights, and write question/answer JSON when given
lift-mlx's generator prompt. The training corpus mixes four kinds of sample:

- `doc`: plain language modelling on world A's prose (and on fresh worlds' prose);
- `read`: a question answered with a document view in context, exactly as `ask` lays it out;
  the views come from fresh worlds (facts the model cannot know, so it must read) and from
  world A (where a fact outside the view is answered from memory, as in lift+icl);
- `closed`: a question about world A answered with no context;
- `gen`: the generator prompt of `synthesize` answered by the QA JSON about its target;
- `copy` (no share by default): random tokens, a random sequence, more random tokens and the
  sequence again, loss on its repeat only: copying from the context, at no fixed distance.

Only train phrasings of the questions are used; held-out phrasings are left for evaluation.
Loss is on the answers only, except for `doc` samples.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import prompts
from .answer import question_prompt
from .samples import Sample, buckets_for, end_of_turn, make_batch, qa_sample
from .synthesize import task_windows
from .world import TEMPLATES, TRAIN_PHRASINGS, World

KINDS = ("doc", "read", "closed", "gen", "copy")
_PLACEHOLDER = "Which of the many long names written in this document is the one " * 2


@dataclass
class WorldModelSettings:
    seed: int = 0  # world A's seed; also seeds the corpus and the weights
    world_entities: int = 60  # world A: ~260 facts, ~2.5k tokens of prose
    renderings: int = 6  # world A documents, each with its own paragraph order and phrasing
    fresh_entities: tuple[int, int] = (5, 16)  # size range of the fresh worlds used for reading
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    window: int = 512  # max_position_embeddings: the model's context window
    answer_tokens: tuple[int, ...] = (32, 64)  # `ask` max_tokens values the reading views leave
    train_tokens: int = 2_000_000  # real tokens in the corpus: ~25 min at ~1.4k tokens/s
    mix: dict[str, float] = field(
        default_factory=lambda: {"doc": 0.10, "read": 0.55, "closed": 0.15, "gen": 0.20})
    batch_size: int = 4  # rows of a full-window batch; shorter samples get more rows
    lr: float = 1.5e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1  # cosine decay to this share of lr
    # The generator prompt as the experiment's synthesize stage uses it.
    window_chars: int = 400  # preceding text shown to the generator (fits a 512-token window)
    sentences_per_task: tuple[int, ...] = (1, 2)
    qa_per_sentence: tuple[int, ...] = (1, 2)

    def to_dict(self) -> dict:
        return asdict(self)


# Seconds-to-a-minute variant for tests and CI.
TINY = dict(world_entities=8, renderings=2, fresh_entities=(5, 8), vocab_size=512,
            hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, window=512,
            answer_tokens=(16,), train_tokens=60_000, batch_size=1, lr=3e-3, warmup_steps=10,
            window_chars=150)


def tiny_settings(**overrides) -> WorldModelSettings:
    return WorldModelSettings(**{**TINY, **overrides})


def fresh_world(rng: random.Random, settings: WorldModelSettings) -> World:
    """A world the model never stores: its seeds are far from world A's."""
    return World.generate(10_000 + rng.randrange(10**9), rng.randint(*settings.fresh_entities))


def world_a(settings: WorldModelSettings) -> World:
    return World.generate(settings.seed, settings.world_entities)


def tokenizer_corpus(settings: WorldModelSettings) -> list[str]:
    """Text for the BPE: fresh worlds (so merges are syllables, not world A's names), world A,
    every template and the prompt wording."""
    rng = random.Random(f"tokenizer:{settings.seed}")
    texts = [fresh_world(rng, settings).document() for _ in range(40)]
    texts += [world_a(settings).document(s) for s in range(settings.renderings)]
    # Repeated so that their words become single tokens: prompts are most of a sample's length.
    for attrs in TEMPLATES.values():
        for statements, questions in attrs.values():
            texts += (list(statements) + list(questions)) * 5
    texts += [prompts.CONTEXT_HEADER, prompts.QUESTION_HEADER, prompts.RECITE_INSTRUCTION,
              prompts.ELLIPSIS, prompts.GENERATOR_INSTRUCTIONS,
              prompts.qa_json([("What is it?", "A test.")])] * 50
    return texts


def _answer_sample(prompt: list[int], answer: list[int], kind: str) -> Sample:
    return Sample(tuple(prompt + answer), (0,) * len(prompt) + (1,) * len(answer), kind)


def doc_samples(tokenizer, text: str, length: int) -> list[Sample]:
    """Plain language modelling: the text's tokens in consecutive chunks of `length`."""
    ids = prompts.encode(tokenizer, text)
    return [Sample(tuple(ids[i:i + length]), (1,) * len(ids[i:i + length]), "doc")
            for i in range(0, len(ids), length) if len(ids[i:i + length]) > 1]


def train_question(world: World, key: tuple[str, str], rng: random.Random) -> tuple[str, str]:
    """A train-phrasing question about the fact `key` and its answer."""
    fact = next(f for f in world.facts if f.key == key)
    templates = TEMPLATES[fact.kind][fact.attribute][1][:TRAIN_PHRASINGS]
    return rng.choice(templates).format(e=fact.entity), fact.value


def reading_sample(tokenizer, world: World, doc_tokens: list[int], rng: random.Random,
                   settings: WorldModelSettings, from_memory: bool) -> Sample | None:
    """A question laid out as `ask` lays it out: a head+tail view of the document, then the
    question. Asks about a fact in the view, or (`from_memory`) about any fact of the world."""
    max_tokens = rng.choice(settings.answer_tokens)
    # Which facts does the view hold? Lay out a question longer than any real one (a shorter
    # question only widens the view), then read the prompt back.
    probe = question_prompt(tokenizer, _PLACEHOLDER, doc_tokens, settings.window, max_tokens)
    inside = list(world.fact_offsets(tokenizer.decode(probe)))
    keys = [f.key for f in world.facts] if from_memory else inside
    if not keys:
        return None
    key = rng.choice(keys)
    question, answer = train_question(world, key, rng)
    prompt = question_prompt(tokenizer, question, doc_tokens, settings.window, max_tokens)
    if not from_memory and key not in world.fact_offsets(tokenizer.decode(prompt)):
        return None
    target = prompts.encode(tokenizer, answer) + end_of_turn(tokenizer)
    return _answer_sample(prompt, target, "read")


def closed_book_samples(tokenizer, world: World) -> list[Sample]:
    """Every train-phrasing question about the world, answered without context."""
    return [Sample(s.tokens, s.mask, "closed")
            for s in (qa_sample(tokenizer, q.question, q.answer)
                      for q in world.questions("train"))]


def generator_samples(tokenizer, world: World, doc_seed: int, rng: random.Random,
                      settings: WorldModelSettings) -> list[Sample]:
    """The synthesize stage's prompt for windows of a document, answered by QA JSON about the
    target sentences (`qa_per_sentence` different train phrasings per fact)."""
    text = world.document(doc_seed)
    out = []
    for window in task_windows(text, rng.choice(settings.sentences_per_task),
                               settings.window_chars):
        per_fact = rng.choice(settings.qa_per_sentence)
        pairs = []
        for key in world.fact_offsets(window.target):
            fact = next(f for f in world.facts if f.key == key)
            templates = TEMPLATES[fact.kind][fact.attribute][1][:TRAIN_PHRASINGS]
            for t in rng.sample(templates, min(per_fact, len(templates))):
                pairs.append((t.format(e=fact.entity), fact.value))
        if not pairs:
            continue
        body = prompts.generator_body(tokenizer, window.preceding, window.target,
                                      per_fact * window.n_sentences)
        prompt = prompts.chat_ids(tokenizer, body)
        target = prompts.encode(tokenizer, prompts.qa_json(pairs)) + end_of_turn(tokenizer)
        if len(prompt) + len(target) <= settings.window:
            out.append(_answer_sample(prompt, target, "gen"))
    return out


def copy_sample(rng: random.Random, vocab_size: int) -> Sample:
    """A random sequence repeated after random filler: only looking back at the first copy
    predicts the second, wherever the two sit (no positional shortcut). At most 192 tokens."""
    pick = lambda n: [rng.randrange(3, vocab_size) for _ in range(n)]  # noqa: E731
    sequence = pick(rng.randint(4, 48))
    head = pick(rng.randint(0, 32)) + sequence + pick(rng.randint(0, 64))
    # The repeat's first token is unpredictable: nothing announces it.
    mask = [0] * (len(head) + 1) + [1] * (len(sequence) - 1)
    return Sample(tuple(head + sequence), tuple(mask), "copy")


def _tokens(samples: list[Sample]) -> int:
    return sum(len(s) for s in samples)


def build_corpus(tokenizer, settings: WorldModelSettings) -> dict[str, list[Sample]]:
    """The training samples of each kind, each kind filling its share of `train_tokens`."""
    rng = random.Random(f"corpus:{settings.seed}")
    world = world_a(settings)
    budget = {k: settings.mix.get(k, 0.0) * settings.train_tokens for k in KINDS}
    corpus: dict[str, list[Sample]] = {k: [] for k in KINDS}

    def fill(kind: str, make: Callable[[], list[Sample]]) -> None:
        total = 0
        while total < budget[kind]:
            for sample in make():
                corpus[kind].append(sample)
                total += len(sample) - 1  # tokens trained on: every one but the first
                if total >= budget[kind]:
                    break

    renderings = [prompts.encode(tokenizer, world.document(s)) for s in range(settings.renderings)]

    def docs() -> list[Sample]:
        # World A's prose half the time, a fresh world's otherwise (language and names in
        # general, not only world A's).
        if rng.random() < 0.5:
            return doc_samples(tokenizer, world.document(rng.randrange(settings.renderings)),
                               settings.window)
        return doc_samples(tokenizer, fresh_world(rng, settings).document(), settings.window)

    def reads() -> list[Sample]:
        if rng.random() < 0.75:  # a fresh world: the answer can only come from the view
            fresh = fresh_world(rng, settings)
            doc = prompts.encode(tokenizer, fresh.document())
            # Log-uniform lengths: short views teach reading with many cheap samples, long
            # ones the head+tail layout `ask` uses.
            n = min(len(doc), int(math.exp(rng.uniform(math.log(32), math.log(len(doc))))))
            start = rng.randint(0, len(doc) - n)
            sample = reading_sample(tokenizer, fresh, doc[start:start + n], rng, settings,
                                    from_memory=False)
        else:  # a slice of a world A document: inside the view or from memory
            doc = rng.choice(renderings)
            n = rng.randint(settings.window // 4, min(len(doc), 3 * settings.window))
            start = rng.randint(0, len(doc) - n)
            sample = reading_sample(tokenizer, world, doc[start:start + n], rng, settings,
                                    from_memory=rng.random() < 0.3)
        return [sample] if sample else []

    closed = closed_book_samples(tokenizer, world)

    def closeds() -> list[Sample]:
        return rng.sample(closed, len(closed))

    def gens() -> list[Sample]:
        if rng.random() < 0.5:
            return generator_samples(tokenizer, world, rng.randrange(settings.renderings), rng,
                                     settings)
        return generator_samples(tokenizer, fresh_world(rng, settings), 0, rng, settings)

    def copies() -> list[Sample]:
        return [copy_sample(rng, len(tokenizer))]

    for kind, make in (("doc", docs), ("read", reads), ("closed", closeds), ("gen", gens),
                       ("copy", copies)):
        fill(kind, make)
    return corpus


@dataclass
class WorldModelReport:
    path: str
    parameters: int
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    corpus: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> samples, tokens
    first_loss: float = math.nan
    final_loss: float = math.nan
    final_loss_by_kind: dict[str, float] = field(default_factory=dict)


def batch_plan(samples: list[Sample], batch_tokens: int, buckets: list[int],
               rng: random.Random) -> list[tuple[int, list[Sample]]]:
    """Samples grouped by padded length, `batch_tokens // length` rows per batch: short
    closed-book questions are not padded out to steps as slow as a window's."""
    by_bucket: dict[int, list[Sample]] = {}
    for s in samples:
        length = next((b for b in buckets if b >= len(s) - 1), buckets[-1])
        by_bucket.setdefault(length, []).append(s)
    plan = []
    for length, group in sorted(by_bucket.items()):
        rng.shuffle(group)
        rows = max(1, batch_tokens // length)
        plan += [(length, group[i:i + rows]) for i in range(0, len(group), rows)]
    rng.shuffle(plan)
    return plan


def lr_at(step: int, total: int, settings: WorldModelSettings) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction of lr."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
    low = settings.min_lr_fraction
    return settings.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_world_model(
    out: str | Path,
    settings: WorldModelSettings | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
) -> WorldModelReport:
    """Train a fresh llama on world A's corpus (full-parameter) and save it for mlx_lm.load."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.utils import get_total_parameters, save_model

    from .config import TrainSettings
    from .tiny import build_tiny_model, train_tokenizer
    from .train import Trainer

    settings = settings or WorldModelSettings()
    log = log or (lambda _: None)
    out = Path(out)
    tokenizer = train_tokenizer(tokenizer_corpus(settings), settings.vocab_size)
    build_tiny_model(
        out, hidden_size=settings.hidden_size, num_layers=settings.num_layers,
        num_heads=settings.num_heads, intermediate_size=settings.intermediate_size,
        max_position_embeddings=settings.window, tokenizer=tokenizer, seed=settings.seed,
    )
    model, tokenizer = mlx_lm.load(str(out))
    corpus = build_corpus(tokenizer, settings)
    report = WorldModelReport(str(out), get_total_parameters(model))
    report.corpus = {k: {"samples": len(v), "tokens": _tokens(v)} for k, v in corpus.items()}
    log(f"model: {report.parameters:,} parameters, vocab {len(tokenizer)}, "
        f"window {settings.window}")
    log("corpus: " + ", ".join(f"{k} {v['samples']} samples / {v['tokens']:,} tokens"
                               for k, v in report.corpus.items()))

    samples = [s for group in corpus.values() for s in group]
    rng = random.Random(f"batches:{settings.seed}")
    buckets = buckets_for(max(len(s) for s in samples) - 1, smallest=32)
    plan = batch_plan(samples, settings.batch_size * settings.window, buckets, rng)
    trainer = Trainer(model, TrainSettings(lr=settings.lr, grad_checkpoint=False, compile=False,
                                           seed=settings.seed))
    pad = tokenizer.pad_token_id
    model.train()
    start = time.perf_counter()
    losses: list[tuple[str, float]] = []
    for i, (length, chunk) in enumerate(plan):
        trainer.optimizer.learning_rate = lr_at(i, len(plan), settings)
        batch = make_batch(chunk, len(chunk), length, pad)
        loss = trainer.step(batch).item()
        kinds = {s.kind for s in chunk}
        losses.append((kinds.pop() if len(kinds) == 1 else "mixed", loss))
        report.tokens += batch.n_tokens
        if (i + 1) % log_every == 0 or i + 1 == len(plan):
            recent = [v for _, v in losses[-log_every:]]
            elapsed = time.perf_counter() - start
            log(f"step {i + 1}/{len(plan)}  loss {sum(recent) / len(recent):.3f}  "
                f"{report.tokens / elapsed:,.0f} tok/s  {elapsed / 60:.1f} min")
    model.eval()
    report.seconds = time.perf_counter() - start
    report.steps = len(plan)
    head = [v for _, v in losses[:max(1, len(losses) // 20)]]
    tail = losses[-max(1, len(losses) // 10):]
    report.first_loss = sum(head) / len(head)
    report.final_loss = sum(v for _, v in tail) / len(tail)
    for kind in KINDS:
        values = [v for k, v in tail if k == kind]
        if values:
            report.final_loss_by_kind[kind] = sum(values) / len(values)
    mx.eval(model.parameters())
    save_model(out, model)
    return report


@dataclass
class ReadingSettings:
    """The reading stage that follows the corpus. Full document views do not teach a model
    this small to answer from its prompt; contexts that grow stage by stage do. Each step asks
    `batch_size` questions about never-seen worlds, each with a context of 1 to the stage's
    maximum number of consecutive sentences (the fact's own among them); every
    `rehearse_every`-th step instead trains on world A closed-book questions or generator
    demonstrations, in turn, so that those skills are kept."""
    schedule: tuple[tuple[int, int], ...] = (
        (250, 1), (250, 2), (250, 4), (250, 8))  # (steps, max sentences) of each stage
    batch_size: int = 32
    lr: float = 1e-3
    rehearse_every: int = 4  # 0: reading only
    generator_rows: int = 4  # generator demonstrations per rehearsal batch
    max_tokens: int = 32  # the answer budget `ask` leaves in the window
    check_sentences: tuple[int, ...] = (1, 4, 16)  # context sizes measured after each stage
    check_questions: int = 40

    def to_dict(self) -> dict:
        return asdict(self)


def reading_example(tokenizer, world: World, rng: random.Random, sentences: int,
                    phrasings: str, settings: WorldModelSettings, max_tokens: int = 32
                    ) -> tuple[list[int], str]:
    """(prompt ids, answer): `sentences` consecutive sentences of `world`'s document as the
    context of `ask`'s prompt, and a question about a fact stated in one of them."""
    text, sentences_at = world.layout(rng.randrange(1000))
    start = rng.randint(0, max(0, len(sentences_at) - sentences))
    shown = sentences_at[start:start + sentences]
    end = shown[-1][0] + len(shown[-1][1])
    fact = rng.choice(shown)[2]
    qa = rng.choice([q for q in world.questions(phrasings) if (q.entity, q.attribute) == fact.key])
    prompt = question_prompt(tokenizer, qa.question,
                             prompts.encode(tokenizer, text[shown[0][0]:end]),
                             settings.window, max_tokens)
    return prompt, qa.answer


def answer_accuracy(model, tokenizer, prompt_ids: list[list[int]], answers: list[str],
                    max_tokens: int) -> float:
    """Exact match of the model's greedy answers to `prompt_ids` against `answers`."""
    from .metrics import exact_match

    got = generate_batch(model, tokenizer, prompt_ids, max_tokens)
    return _mean(exact_match(g, [a]) for g, a in zip(got, answers))


def reading_accuracy(model, tokenizer, sentences: int, n: int, rng: random.Random,
                     settings: WorldModelSettings, max_tokens: int = 32) -> float:
    """Exact match on `n` held-out-phrasing questions about fresh worlds, each asked with a
    context of `sentences` consecutive sentences that states its fact."""
    examples = [reading_example(tokenizer, fresh_world(rng, settings), rng, sentences,
                                "heldout", settings, max_tokens) for _ in range(n)]
    return answer_accuracy(model, tokenizer, [p for p, _ in examples],
                           [v for _, v in examples], 12)


class ReadingBatches:
    """The reading stage's batches: `next(step, max_sentences)` gives reading questions about
    fresh worlds, or, every `rehearse_every`-th step, world A closed-book questions and
    generator demonstrations in turn."""

    def __init__(self, tokenizer, settings: WorldModelSettings, reading: ReadingSettings,
                 rng: random.Random):
        self.tokenizer, self.settings, self.reading, self.rng = tokenizer, settings, reading, rng
        self.world = world_a(settings)
        self.closed = closed_book_samples(tokenizer, self.world)
        self.rehearsals = 0

    def next(self, step: int, max_sentences: int) -> list[Sample]:
        if self.reading.rehearse_every and step % self.reading.rehearse_every == 0:
            self.rehearsals += 1
            return self.rehearsal(self.rehearsals % 2 == 1)
        return self.questions(max_sentences)

    def questions(self, max_sentences: int) -> list[Sample]:
        tok, rng, settings = self.tokenizer, self.rng, self.settings
        batch = []
        for _ in range(self.reading.batch_size):
            prompt, answer = reading_example(tok, fresh_world(rng, settings), rng,
                                             rng.randint(1, max_sentences), "train", settings,
                                             self.reading.max_tokens)
            batch.append(_answer_sample(prompt, prompts.encode(tok, answer) + end_of_turn(tok),
                                        "read"))
        return batch

    def rehearsal(self, closed_book: bool) -> list[Sample]:
        rng = self.rng
        if closed_book:
            return rng.sample(self.closed, min(self.reading.batch_size, len(self.closed)))
        batch: list[Sample] = []
        while not batch:  # a few windows of a document, world A's or a fresh world's
            source = self.world if rng.random() < 0.5 else fresh_world(rng, self.settings)
            samples = generator_samples(self.tokenizer, source,
                                        rng.randrange(self.settings.renderings), rng,
                                        self.settings)
            batch = rng.sample(samples, min(self.reading.generator_rows, len(samples)))
        return batch


def train_reading(
    model_path: str | Path,
    out: str | Path,
    settings: WorldModelSettings,
    reading: ReadingSettings | None = None,
    log: Callable[[str], None] | None = None,
    seed: int = 0,
    on_stage: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Continue the model at `model_path` through the reading stage and save it to `out`
    (after every stage, so an interrupted run keeps its last finished stage). Returns one row
    per check: step, stage maximum, mean loss of the stage's last quarter, held-out reading
    accuracy at each `check_sentences` and closed-book accuracy on world A. `on_stage(rows)`
    is called after each stage's model is saved."""
    import shutil

    import mlx.core as mx
    import mlx_lm
    from mlx_lm.utils import save_model

    from .config import TrainSettings
    from .train import Trainer

    reading = reading or ReadingSettings()
    log = log or (lambda _: None)
    model_path, out = Path(model_path), Path(out)
    model, tokenizer = mlx_lm.load(str(model_path))
    if out.resolve() != model_path.resolve():
        shutil.copytree(model_path, out, dirs_exist_ok=True)
    trainer = Trainer(model, TrainSettings(lr=reading.lr, grad_checkpoint=False, compile=False,
                                           seed=seed))
    batches = ReadingBatches(tokenizer, settings, reading, random.Random(f"reading:{seed}"))
    train_qas = batches.world.questions("train")
    closed_check = random.Random(f"check:{seed}").sample(
        train_qas, min(reading.check_questions, len(train_qas)))
    closed_ids = [question_prompt(tokenizer, q.question, None, settings.window,
                                  reading.max_tokens) for q in closed_check]
    pad = tokenizer.pad_token_id

    def check(step: int, max_sentences: int, loss: float) -> dict:
        check_rng = random.Random(f"check:{seed}")  # the same questions at every check
        row = {"step": step, "max_sentences": max_sentences, "loss": loss}
        for k in reading.check_sentences:
            row[f"reading_{k}"] = reading_accuracy(model, tokenizer, k, reading.check_questions,
                                                   check_rng, settings, reading.max_tokens)
        row["closed_book_train"] = answer_accuracy(model, tokenizer, closed_ids,
                                                   [q.answer for q in closed_check], 12)
        log(f"step {step}  max sentences {max_sentences}  loss {loss:.3f}  reading "
            + " / ".join(f"{100 * row[f'reading_{k}']:.1f}" for k in reading.check_sentences)
            + f" %  closed-book {100 * row['closed_book_train']:.1f} %")
        return row

    rows = [check(0, 0, math.nan)]
    step, start = 0, time.perf_counter()
    for steps, max_sentences in reading.schedule:
        losses = []
        for _ in range(steps):
            step += 1
            batch = batches.next(step, max_sentences)
            model.train()
            loss = trainer.step(make_batch(batch, len(batch), max(len(s) for s in batch) - 1,
                                           pad)).item()
            model.eval()
            if batch[0].kind == "read":
                losses.append(loss)
        tail = losses[-max(1, len(losses) // 4):]
        rows.append(check(step, max_sentences, _mean(tail)))
        rows[-1]["seconds"] = time.perf_counter() - start
        mx.eval(model.parameters())
        save_model(out, model)
        if on_stage:
            on_stage(rows)
    return rows


def generate_batch(model, tokenizer, prompt_ids: list[list[int]], max_tokens: int,
                   batch_size: int = 32) -> list[str]:
    """Greedy answers to many prompts, decoded together through mlx-lm."""
    from mlx_lm import batch_generate
    from mlx_lm.sample_utils import make_sampler

    texts: list[str] = []
    for i in range(0, len(prompt_ids), batch_size):
        result = batch_generate(model, tokenizer, prompt_ids[i:i + batch_size],
                                max_tokens=max_tokens, sampler=make_sampler(temp=0.0))
        texts += [t.strip() for t in result.texts]
    return texts


def check_world_model(path: str | Path, settings: WorldModelSettings, n_questions: int = 200,
                      rng: random.Random | None = None) -> dict:
    """What the trained model can do, on held-out phrasings: read a world A document view and
    a never-seen world's, answer world A closed-book, and write parseable generator JSON."""
    import mlx_lm

    from .generator_styles import parse_qa

    rng = rng or random.Random(0)
    model, tokenizer = mlx_lm.load(str(path))
    world = world_a(settings)
    max_tokens = settings.answer_tokens[0]

    def accuracy(qas: list, prompt) -> float:
        """Exact match of greedy answers to `qas`, each asked with `prompt(qa)`."""
        return answer_accuracy(model, tokenizer, [prompt(q) for q in qas],
                               [q.answer for q in qas], max_tokens)

    def in_context(w: World, text: str) -> tuple[float, int]:
        doc = prompts.encode(tokenizer, text)
        probe = question_prompt(tokenizer, _PLACEHOLDER, doc, settings.window, max_tokens)
        inside = set(w.fact_offsets(tokenizer.decode(probe)))
        qas = [q for q in w.questions("heldout") if (q.entity, q.attribute) in inside]
        qas = rng.sample(qas, min(n_questions, len(qas)))
        return accuracy(qas, lambda q: question_prompt(tokenizer, q.question, doc,
                                                       settings.window, max_tokens)), len(qas)

    def closed_book(phrasings: str) -> float:
        qas = rng.sample(world.questions(phrasings), min(n_questions,
                                                         len(world.questions(phrasings))))
        return accuracy(qas, lambda q: question_prompt(tokenizer, q.question, None,
                                                       settings.window, max_tokens))

    fresh = fresh_world(random.Random(f"check:{settings.seed}"), settings)
    seen_acc, seen_n = in_context(world, world.document(0))
    fresh_acc, fresh_n = in_context(fresh, fresh.document())
    # Reading in its simplest form: the context is the one sentence that states the fact.
    qas = rng.sample(fresh.questions("heldout"), min(n_questions, len(fresh.questions("heldout"))))
    one_sentence = accuracy(qas, lambda q: question_prompt(
        tokenizer, q.question, prompts.encode(tokenizer, statement(fresh, q)), settings.window,
        max_tokens))

    windows = task_windows(fresh.document(), 2, settings.window_chars)[:32]
    ids = [prompts.chat_ids(tokenizer, prompts.generator_body(tokenizer, w.preceding, w.target,
                                                              w.n_sentences))
           for w in windows]
    outputs = generate_batch(model, tokenizer, ids, max_tokens=4 * max_tokens)
    parsed = [parse_qa(o) for o in outputs]
    pairs = [(p, w) for ps, w in zip(parsed, windows) for p in ps]
    return {
        "in_context_heldout_world_a": seen_acc, "in_context_questions_world_a": seen_n,
        "in_context_heldout_fresh": fresh_acc, "in_context_questions_fresh": fresh_n,
        "in_context_heldout_one_sentence": one_sentence,
        "copy_nll": copy_nll(model, len(tokenizer), rng),
        "copy_nll_chance": math.log(len(tokenizer)),
        "closed_book_heldout_world_a": closed_book("heldout"),
        "closed_book_train_world_a": closed_book("train"),
        "generator_parseable": _mean([bool(p) for p in parsed]),
        "generator_pairs_answer_in_target": _mean(
            [p.answer.strip() != "" and p.answer.strip() in w.target for p, w in pairs]),
        "generator_example": outputs[0] if outputs else "",
    }


def statement(world: World, qa) -> str:
    """The first statement phrasing of the fact a question asks about."""
    fact = next(f for f in world.facts if f.key == (qa.entity, qa.attribute))
    return TEMPLATES[fact.kind][fact.attribute][0][0].format(e=fact.entity, v=fact.value)


def copy_nll(model, vocab_size: int, rng: random.Random, length: int = 40, rows: int = 16
             ) -> float:
    """Mean NLL of the second copy of a repeated random token sequence (its first token
    left out: nothing announces the repeat). Near log(vocab) means the model cannot copy
    from its context, the skill that reading a document rests on (induction heads)."""
    import mlx.core as mx
    import mlx.nn as nn

    seqs = mx.array([[rng.randrange(3, vocab_size) for _ in range(length)] * 2
                     for _ in range(rows)])
    losses = nn.losses.cross_entropy(model(seqs[:, :-1]), seqs[:, 1:])
    return losses[:, length:].mean().item()


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
