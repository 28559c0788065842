"""Settings of each stage, with the paper's values or the default preset's, and the presets.

Paper = Mao et al., "LIFT" (arXiv 2502.14644). The default preset targets a 0.5-3B 4-bit model
on a 16 GB Mac: it keeps the paper's shape (LoRA on every linear layer, constant lr, AdamW,
overlapping segments, QA tasks) at a size that trains in minutes.

Each field is declared once, with `setting(...)`: its default, help text, CLI flag, range or
choices and the paper's value live in the field's metadata (as in mlx-lm's `TrainingArgs`).
The CLI options (options.py), the "paper" preset and `Settings.validate` are built from them.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection
from dataclasses import dataclass, field

from .adapters import ADAPTER_KINDS
from .errors import LiftError
from .generator_styles import STYLES
from .prompts import SYSTEM_PROMPTS
from .tasks import TASKS

# Ceilings of the size-like settings: far above any real use (the paper's values and every
# preset of models/presets.json pass), low enough that a typo such as --rank 1000000 is refused
# before it allocates gigabytes.
LONGEST_WINDOW = 131072  # tokens: the longest window of the models lift-mlx runs (Llama 3.1)
MOST_ROWS = 1024  # samples or requests at once: 256x the paper's batch of 4
MOST_RANK = 1024  # 8x the paper's rank 128 for an 8B model; a full-rank update of a 1B layer
SEED_MAX = 2**32 - 1  # the seeds of Python's, NumPy's and MLX's generators alike
# Retrieved passages, when answering and in the reader samples that train for it. Measured with
# SmolLM2 and BM25 over 48-token passages (docs/answer-modes.md), on the documents settings are
# chosen on: 64/128/256/512/1024 tokens answered 48/75/60/52/50% on a ~4k knowledge-world
# document and 26/32/22% (64-256) on coreutils' NEWS, whose evidence 128 tokens held for 86% of
# its questions: a small model reads a few passages better than many, and sooner.
RETRIEVED_LEN = 128
PASSAGE_LEN = 48
VIEW_LEN = 1024  # the head+tail view's most tokens: answers at short-context speed


def setting(default, help: str, *, flag: str | None = None, name: str | None = None,
            min: float | None = None, max: float | None = None, min_open: bool = False,
            choices: Collection[str] | None = None, paper=None, shown: str | None = None,
            keyed: bool | str = True, kind: str | None = None):
    """A stage field with its declaration in the metadata.

    `flag`: the CLI option (none: settable from Python, presets and the server only). `name`:
    the flat name for `Settings.replace`, presets and models/presets.json, when the field's
    own name is taken by another stage. `min`/`max` (`min_open`: strictly above `min`) or
    `choices`: the values allowed (a registry, such as the adapter kinds, is read when a value
    is checked, so a kind registered later is allowed too). `paper`: the value of the "paper"
    preset. `shown`: the default as the help states it, where the value alone would not say
    it. `keyed=False`: a value that leaves the trained adapter as it is, so it is no part of
    the adapter's key; `keyed="changed"`: part of the key only away from its default (a
    setting added after adapters were stored, whose keys it then leaves as they were).
    `kind`: a setting of that adapter kind alone, part of the key only when the kind trains.
    """
    metadata = dict(help=help, flag=flag, name=name, min=min, max=max, min_open=min_open,
                    choices=choices, paper=paper, shown=shown, keyed=keyed, kind=kind)
    return field(default=default, metadata=metadata)


@dataclass
class SplitSettings:
    # paper: 2048; halved so batch 4 fits a 16 GB Mac with a 1.5B model
    seg_len: int = setting(1024, "Tokens per recite segment.", flag="--seg-len", min=8,
                           max=LONGEST_WINDOW, paper=2048)
    # paper: 768 = 3/8 of a segment; same 5/8 overlap (~2.7 views per token)
    stride: int = setting(384, "Tokens between segment starts; segments overlap when smaller "
                          "than --seg-len.", flag="--stride", min=1, max=LONGEST_WINDOW,
                          paper=768)
    # head+tail prefix of recite samples (paper: 4096)
    context_len: int = setting(512, "Head+tail document view (tokens) before each recite "
                               "segment; 0 = off.", flag="--context-len", min=0,
                               max=LONGEST_WINDOW, paper=4096)
    # the view `ask` shows (not in the paper): QA samples that look like answering with it
    qa_context_len: int = setting(0, "Head+tail document view (tokens) before a share "
                                  "(--qa-context-share) of the QA and cloze samples, laid out "
                                  "as `ask` lays out its view; 0 = off.",
                                  flag="--qa-context-len", min=0, max=LONGEST_WINDOW,
                                  keyed="changed")
    qa_context_share: float = setting(0.25, "Share of the QA and cloze samples that get the "
                                      "--qa-context-len view, picked by --seed.",
                                      flag="--qa-context-share", min=0.0, max=1.0,
                                      keyed="changed")
    # RAFT's recipe (not in the paper): QA samples that look like answering with `--retrieve`
    reader_share: float = setting(0.0, "Share of the QA and cloze samples that get the "
                                  "document's passages that match their question before it, "
                                  "laid out as `ask --retrieve` lays them out (after the "
                                  "--qa-context-share ones), so that the adapter stays a good "
                                  "reader of retrieved passages; 0 = off.",
                                  flag="--reader-share", min=0.0, max=1.0, keyed="changed")
    reader_oracle: float = setting(0.8, "Of the --reader-share samples, the share whose "
                                   "passages hold the answer; the others get only passages "
                                   "without it, so that the adapter learns to answer from "
                                   "what it absorbed when retrieval misses.",
                                   flag="--reader-oracle", min=0.0, max=1.0, keyed="changed")
    reader_len: int = setting(RETRIEVED_LEN, "Most tokens of passages in a --reader-share "
                              "sample (as --retrieved-len when answering).",
                              flag="--reader-len", min=16, max=LONGEST_WINDOW, keyed="changed")
    reader_passage_len: int = setting(PASSAGE_LEN, "Tokens per passage in a --reader-share "
                                      "sample (as --passage-len when answering).",
                                      min=8, max=LONGEST_WINDOW, keyed="changed")


@dataclass
class SynthSettings:
    # paper: 5 or 10 (72B generator); 1 in its fast setting; 64 is 6x its most
    qa_per_sentence: int = setting(2, "QA pairs asked of the generator per sentence.",
                                   flag="--qa-per-sentence", min=1, max=64, paper=10)
    # generator_styles; auto picks by model size
    style: str = setting("auto", "How the generator is asked for QA pairs: json (instructions, "
                         "a JSON reply: instruct models of ~1B and up), lines (worked examples "
                         "in a line format, one pair per request: small models), auto (lines "
                         "below 1B parameters).", flag="--generator-style",
                         choices=("auto", *STYLES))
    # 64 sentences are a page or two: more than a generator answers for in one reply
    sentences_per_task: int = setting(2, "Target sentences per generator request.", min=1,
                                      max=64, paper=1)
    # paper: ~2k characters; 100k characters (~25k tokens) fill a 32k window
    window_chars: int = setting(2000, "Preceding text the generator sees, in characters.", min=0,
                                max=100_000)
    # JSON for a few pairs fits in 256; the window bounds the paper's 640
    max_tokens: int = setting(256, "Generation budget per generator request, in tokens.",
                              min=16, max=LONGEST_WINDOW, paper=640)
    generator_batch_size: int = setting(16, "Generator requests decoded together.",
                                        flag="--generator-batch-size", min=1, max=MOST_ROWS)
    min_overlap: float = setting(0.5, "Share of an answer's words that must occur in the "
                                 "generator's window.", min=0.0, max=1.0)
    # greedy, so a cached run reproduces
    temp: float = setting(0.0, "Generator sampling temperature.", min=0.0)
    cloze_phrasings: int = setting(1, "Ways each cloze and phrases question is asked: 1, the "
                                   "sentence asked back (\"The Reidrys is captained by "
                                   "what?\"); 2 adds the question word first (\"What is the "
                                   "Reidrys captained by?\") where the sentence allows it, "
                                   "else a blank to fill; 3 both. Each is a sample of its own.",
                                   flag="--cloze-phrasings", min=1, max=3, keyed="changed")
    verify_qa: bool = setting(False, "Ask each kept pair's question back of the generator with "
                              "its target sentence in the prompt, and keep the pair only if "
                              "the reply holds its answer.", flag="--verify-qa")


@dataclass
class TrainSettings:
    # tasks/; the paper's: recite (its earlier versions) and qa
    tasks: tuple[str, ...] = setting(("recite", "qa"), "Training tasks, comma-separated: " + ", "
                                     .join(f"{t.name} ({t.help})" for t in TASKS.values())
                                     + ".", flag="--tasks", choices=TASKS)
    # adapters/; the paper's is LoRA (its earlier versions: Gated Memory)
    adapter: str = setting("lora", "Adapter kind trained on the frozen base: " + "; ".join(
                           f"{k.name} ({k.help})" for k in ADAPTER_KINDS.values()) + ".",
                           flag="--adapter", choices=ADAPTER_KINDS)
    # paper: 128 for an 8B model; 32 keeps a 1.5B adapter ~35 MB
    rank: int = setting(32, "LoRA rank.", flag="--rank", min=1, max=MOST_RANK,
                       paper=128, kind="lora")
    # paper: alpha 256 / rank 128
    scale: float = setting(2.0, "LoRA scale (alpha / rank); also Gated Memory's o_proj LoRA.",
                           flag="--scale", min=0, min_open=True, paper=2.0)
    # paper (Gated Memory): rank 2 on the output projection
    o_proj_rank: int = setting(2, "Gated Memory: rank of the LoRA on each attention output "
                               "projection (o_proj), trained with the memory; 0 = none.",
                               flag="--o-proj-rank", min=0, max=MOST_RANK,
                               kind="gated")
    # paper: 5e-5 x 5 epochs; fast setting 3e-4 x 1 epoch; Gated Memory: 1e-3 (gated.py)
    lr: float = setting(2e-4, "Learning rate (AdamW, constant).", flag="--lr", min=0,
                        min_open=True, paper=5e-5,
                        shown="2e-4; 1e-3 with --adapter gated, the paper's for it")
    # a constant rate carried SmolLM2 on the knowledge world; cosine from 1e-3 at 2 epochs did
    # not stop the collapse into a few answer strings (docs/answer-modes.md)
    lr_schedule: str = setting("constant", "How the learning rate moves over the run: constant, "
                               "or cosine (a linear warm-up over the first 5% of the steps, "
                               "then a cosine decay to a tenth of --lr).",
                               flag="--lr-schedule", choices=("constant", "cosine"),
                               keyed="changed")
    # 1000: 200x the paper's 5; a run that long overfits any document
    epochs: int = setting(3, "Passes over all samples.", flag="--epochs", min=1, max=1000,
                          paper=5)
    # SmolLM2's own system message is 20 of a 46-token cloze sample (measured: the preset's why)
    system_prompt: str = setting("model", "The system message of every prompt the adapter trains "
                                 "on and answers with: the chat template's own (model), or none "
                                 "(an empty one, which saves the tokens of a template's default "
                                 "message in every sample).",
                                 flag="--system-prompt", choices=SYSTEM_PROMPTS, keyed="changed")
    # measured on SmolLM2 (scripts/token_curve.py): see the smollm2 preset's why
    recite_epochs: int = setting(0, "Passes over the recite segments (0: as many as --epochs); "
                                 "the other samples keep --epochs.", flag="--recite-epochs",
                                 min=0, max=1000, keyed="changed")
    # paper: 4
    batch_size: int = setting(4, "Samples per training step.", flag="--batch-size", min=1,
                              max=MOST_ROWS)
    # paper: 1.0
    grad_clip: float = setting(1.0, "Gradient norm clip.", min=0, min_open=True)
    # "tokens": the loss is the mean over every target token of a batch (the paper, mlx-lm), so
    # a 128-token recite segment outweighs a 4-token answer 32 to 1; "samples": each sample's
    # own mean, averaged, so every QA pair counts as much as a segment.
    loss_mean: str = setting("tokens", "Average the loss over every target token of a batch "
                             "(the paper), or over samples, each its own mean, so a short "
                             "answer counts as much as a long recite segment.",
                             flag="--loss-mean", choices=("tokens", "samples"))
    # activations of 4 x 1.5k tokens x 28 layers exceed 16 GB
    grad_checkpoint: bool = setting(True, "Recompute activations in the backward pass to save "
                                    "memory.", flag="--grad-checkpoint")
    # measured on SmolLM2 (CPU): 2 of 4 rows at a time, 0.59x the peak memory at the same speed
    micro_batch: int = setting(0, "Rows of a batch run through the model at a time, their "
                               "gradients summed before the one update (the same step in less "
                               "memory); 0 = the whole batch.", flag="--micro-batch", min=0,
                               max=MOST_ROWS, keyed=False)
    # None: on for Metal, off for the CPU (no faster there)
    compile: bool | None = setting(None, "Compile the training step with mx.compile.",
                                   flag="--compile", shown="on for GPUs, off on the CPU, where "
                                   "compiled steps are no faster")
    seed: int = setting(0, "Random seed.", flag="--seed", min=0, max=SEED_MAX)
    # mlx-lm saves every 100 steps too (steps_per_save); a million steps outlast any absorb
    checkpoint_every: int = setting(100, "Keep the adapter and optimizer state every N training "
                                    "steps, so an interrupted absorb resumes there; 0 = never.",
                                    flag="--checkpoint-every", min=0, max=1_000_000,
                                    keyed=False)


@dataclass
class AnswerSettings:
    """How a question is answered, by `ask`, `chat`, the server and `eval` alike (not part of
    the absorb settings: an adapter answers with any of them)."""

    max_tokens: int = setting(256, "Longest answer, in tokens.", flag="--max-tokens", min=1,
                              max=LONGEST_WINDOW)
    # greedy, as the paper answers
    temp: float = setting(0.0, "Sampling temperature; 0 is greedy.", flag="--temp", min=0.0)
    # the paper's answer prompt: a head+tail view of the document, then the question
    context: bool = setting(True, "Show the model a head+tail view of the document that fits "
                            "its window before the question; --no-context asks with the "
                            "question alone, relying on the adapter.", flag="--context")
    # what document apps show: the passages that match the question (BM25); measured better
    # than the view on every document tried, with the base and with the adapter alike
    # (docs/answer-modes.md)
    retrieve: bool = setting(True, "Show the passages of the document that match the question "
                             "(BM25 over whole sentences, in document order) and list them "
                             "after the answer, where they are in the document; where none "
                             "matches, and with --no-retrieve, the head+tail view.",
                             flag="--retrieve")
    # None: what models/presets.json measured best for the model ("answer"), else the adapter.
    # On SmolLM2 the adapter, checked, where one is stored: it ties the plain base reading
    # the passages on real documents and beats it on fact-dense ones (docs/answer-modes.md)
    use_adapter: bool | None = setting(None, "Answer with the document's adapter on the base "
                                       "(--use-adapter), or with the plain base reading the "
                                       "document in the prompt, no absorb needed "
                                       "(--no-use-adapter).", flag="--use-adapter",
                                       shown="the mode measured best for the model: for "
                                       "smollm2 the adapter where one is stored, else the plain "
                                       "base, absorbing nothing (docs/answer-modes.md); the "
                                       "adapter for others; --now: the adapter")
    # None: what models/presets.json measured best for the model ("answer"), else off
    check: bool | None = setting(None, "Where the adapter answers: it answers from memory "
                                 "first (the question alone), and that answer is shown "
                                 "where a retrieved passage backs it (a sentence there holds "
                                 "it, as written, with two of the question's words near it), "
                                 "with that passage as its source; else the plain base "
                                 "answers from the passages (--no-check: the adapter reads the "
                                 "passages).",
                                 flag="--check", shown="what was measured best for the model: on "
                                 "for smollm2, off for others (docs/answer-modes.md)")
    # a short prefill whatever the model's window: a whole 4k-token document in an 8k window
    # took 134-198 s per answer on a 2-core CPU, the question alone 3-4 s
    view_len: int = setting(VIEW_LEN, "Most tokens of the document's head+tail view in the "
                            "prompt, whatever the model's window.", flag="--view-len", min=16,
                            max=LONGEST_WINDOW)
    retrieved_len: int = setting(RETRIEVED_LEN, "Most tokens of retrieved passages in the "
                                 "prompt.", flag="--retrieved-len", min=16,
                                 max=LONGEST_WINDOW)
    passage_len: int = setting(PASSAGE_LEN, "Tokens per retrieved passage (whole sentences up "
                               "to it).", flag="--passage-len", min=8, max=LONGEST_WINDOW)


@dataclass(frozen=True)
class Setting:
    """One stage field as the CLI, the presets and validation see it."""

    name: str  # flat name: Settings.replace(name=...), presets, models/presets.json
    stage: str  # "split", "synth" or "train"
    field: str
    type: object  # the field's annotation, resolved: int, float, str, bool, bool | None, tuple
    default: object
    help: str
    flag: str | None
    min: float | None
    max: float | None
    min_open: bool
    choices: Collection[str] | None
    paper: object
    shown: str | None
    keyed: bool | str
    kind: str | None

    @property
    def label(self) -> str:
        """How messages name it: its flag, else its flat name."""
        return self.flag or self.name

    def allowed(self, value=None) -> str:
        """The values it takes, in words ("at least 1", "one of tokens, samples"). A count's
        ceiling guards against runaway memory rather than bounding what it means, so given a
        `value` below it, only the floor is named ("at least 1"), and above it only the
        ceiling ("at most 1024"); a float's bounds are one range ("between 0 and 1")."""
        if self.choices is not None:
            if self.type == tuple[str, ...]:
                return f"a comma-separated subset of {','.join(self.choices)}"
            return f"one of {', '.join(self.choices)}"
        if self.min is not None and self.max is not None and (value is None
                                                              or self.type is float):
            return f"between {_number(self.min)} and {_number(self.max)}"
        if self.max is not None and (self.min is None or value > self.max):
            return f"at most {_number(self.max)}"
        if self.min == 0 and self.min_open:
            return "positive"
        if self.min is not None:
            return f"{'above' if self.min_open else 'at least'} {_number(self.min)}"
        return "any value"

    def problem(self, value) -> str | None:
        """Why `value` is not allowed ("must be at least 1, not 0"); None when it is."""
        if value is None or isinstance(value, bool):
            return None
        if self.choices is not None:
            values = value if self.type == tuple[str, ...] else (value,)
            ok = bool(values) and set(values) <= set(self.choices)
            shown = (",".join(values) or "none") if self.type == tuple[str, ...] else value
        else:
            if isinstance(value, float) and not math.isfinite(value):  # --lr inf trains NaNs
                return f"must be finite and {self.allowed()}, not {value:g}"
            ok = ((self.min is None or value > self.min or (value == self.min
                                                             and not self.min_open))
                  and (self.max is None or value <= self.max))
            shown = f"{value:g}" if isinstance(value, float) else value
        return None if ok else f"must be {self.allowed(value)}, not {shown}"


def _number(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


@dataclass
class Settings:
    split: SplitSettings = field(default_factory=SplitSettings)
    synth: SynthSettings = field(default_factory=SynthSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train"]["tasks"] = list(self.train.tasks)
        return d

    def used(self) -> dict:
        """`to_dict` without the settings of the adapter kinds that do not train."""
        d = self.to_dict()
        for s in SETTINGS.values():
            if s.kind not in (None, self.train.adapter):
                del d[s.stage][s.field]
        return d

    def keyed(self) -> dict:
        """`used` without the values that leave the adapter as it is: what its key hashes."""
        d = self.used()
        for s in SETTINGS.values():
            if s.field in d[s.stage] and (not s.keyed or (
                    s.keyed == "changed" and d[s.stage][s.field] == s.default)):
                del d[s.stage][s.field]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        train = dict(d.get("train", {}))
        if "tasks" in train:
            train["tasks"] = tuple(train["tasks"])
        synth = dict(d.get("synth", {}))
        if "batch_size" in synth:  # its name in 0.1, where --batch-size set it by mistake
            synth["generator_batch_size"] = synth.pop("batch_size")
        return cls(SplitSettings(**d.get("split", {})), SynthSettings(**synth),
                   TrainSettings(**train))

    def replace(self, **overrides) -> Settings:
        """A copy with flat overrides (`rank=16, seg_len=256`); None values are ignored."""
        new = Settings.from_dict(self.to_dict())
        for name, value in overrides.items():
            if value is None:
                continue
            if name not in SETTINGS:
                raise TypeError(f"unknown setting {name!r}")
            s = SETTINGS[name]
            setattr(getattr(new, s.stage), s.field, tuple(value) if s.type == tuple[str, ...]
                    else value)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise LiftError naming the first value out of its declared range or choices."""
        for s in SETTINGS.values():
            problem = s.problem(getattr(getattr(self, s.stage), s.field))
            if problem:
                raise LiftError(f"{s.label} {problem}")
        if self.split.stride > self.split.seg_len:
            raise LiftError("--stride must be between 1 and --seg-len")


def declared(cls, stage: str) -> list[Setting]:
    """The declarations of the fields of one stage's dataclass."""
    types = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        out.append(Setting(m["name"] or f.name, stage, f.name, types[f.name], f.default,
                           m["help"], m["flag"], m["min"], m["max"], m["min_open"],
                           m["choices"], m["paper"], m["shown"], m["keyed"], m["kind"]))
    return out


def _declared() -> dict[str, Setting]:
    settings = {}
    for stage in dataclasses.fields(Settings):
        for s in declared(stage.default_factory, stage.name):
            if s.name in settings:  # give one of the two fields its own `name=`
                raise TypeError(f"two settings are called {s.name!r}")
            settings[s.name] = s
    flags = [s.flag for s in settings.values() if s.flag]
    if len(set(flags)) != len(flags):
        raise TypeError("two settings declare the same flag")
    return settings


SETTINGS: dict[str, Setting] = _declared()  # flat name -> declaration, in stage order

PRESETS: dict[str, dict] = {
    "default": {},
    # The paper's main setting: every `paper=` value above.
    "paper": {s.name: s.paper for s in SETTINGS.values() if s.paper is not None},
    # The paper's time-to-first-token setting: one QA pair per sentence, one epoch at 3e-4.
    "fast": dict(qa_per_sentence=1, lr=3e-4, epochs=1, grad_checkpoint=True),
}


def preset(name: str, model_settings: dict | None = None, **overrides) -> Settings:
    """Settings of a named preset with flat overrides applied, over the settings recommended
    for the model (its entry in models/presets.json), which come first. The adapter kind's
    own `defaults` (Gated Memory's learning rate) replace the model's and the preset's values,
    which are LoRA's, and give way to the overrides."""
    if name not in PRESETS:
        raise LiftError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = Settings().replace(**{**(model_settings or {}), **PRESETS[name], **given})
    kind = ADAPTER_KINDS[settings.train.adapter]
    return settings.replace(**{k: v for k, v in kind.defaults.items() if k not in given})


def settings_lines(values: dict, sources: dict) -> list[str]:
    """A line per stage of `values` (Settings.to_dict()'s shape): each value, and where it came
    from when not from the defaults (`sources`, by flat name: "model", "preset NAME",
    "option", "adapter KIND")."""
    names = {(s.stage, s.field): s.name for s in SETTINGS.values()}
    return [f"{stage:<12} " + ", ".join(
        f"{k}={v}" + (f" ({sources[names[stage, k]]})" if names.get((stage, k)) in sources
                      else "") for k, v in stage_values.items())
        for stage, stage_values in values.items()]


def setting_sources(name: str, model_settings: dict | None = None, **overrides) -> dict:
    """Where each value `preset` did not take from the defaults came from: "model", "preset
    NAME" or "option" (the last one to set it)."""
    sources = dict.fromkeys(model_settings or {}, "model")
    sources.update(dict.fromkeys(PRESETS.get(name, {}), f"preset {name}"))
    given = {k: v for k, v in overrides.items() if v is not None}
    adapter = {**(model_settings or {}), **PRESETS.get(name, {}), **given}.get(
        "adapter", TrainSettings.adapter)
    if adapter in ADAPTER_KINDS:
        sources.update(dict.fromkeys(ADAPTER_KINDS[adapter].defaults, f"adapter {adapter}"))
    sources.update(dict.fromkeys(given, "option"))
    return sources
