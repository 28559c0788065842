"""Settings of each stage, with the paper's values or the default preset's, and the presets.

Paper = Mao et al., "LIFT" (arXiv 2502.14644). The default preset targets a 0.5-3B 4-bit model
on a 16 GB Mac: it keeps the paper's shape (LoRA on every linear layer, constant lr, AdamW,
overlapping segments, QA tasks) at a size that trains in minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import LiftError

TASKS = ("recite", "qa")


@dataclass
class SplitSettings:
    seg_len: int = 1024  # paper: 2048; halved so batch 4 fits a 16 GB Mac with a 1.5B model
    stride: int = 384  # paper: 768 = 3/8 of a segment; same 5/8 overlap (~2.7 views per token)
    context_len: int = 512  # head+tail prefix of recite samples, 0 = off (paper: 4096)


@dataclass
class SynthSettings:
    qa_per_sentence: int = 2  # paper: 5 or 10 (72B generator); 1 in its fast setting
    style: str = "auto"  # generator prompt style (generator_styles); auto: by model size
    sentences_per_task: int = 2  # target sentences per generator request
    window_chars: int = 2000  # preceding text the generator sees (paper: ~2k characters)
    max_tokens: int = 256  # generation budget per request; JSON for a few pairs fits
    generator_batch_size: int = 16  # generator requests decoded together
    min_overlap: float = 0.5  # share of answer words that must occur in the window
    temp: float = 0.0  # greedy, so a cached run reproduces


@dataclass
class TrainSettings:
    tasks: tuple[str, ...] = TASKS
    rank: int = 32  # paper: 128 for an 8B model; 32 keeps a 1.5B adapter ~35 MB
    scale: float = 2.0  # paper: alpha 256 / rank 128
    lr: float = 2e-4  # paper: 5e-5 x 5 epochs; fast setting 3e-4 x 1 epoch
    epochs: int = 3
    batch_size: int = 4  # paper: 4
    grad_clip: float = 1.0  # paper: 1.0
    # "tokens": the loss is the mean over every target token of a batch (the paper, mlx-lm), so
    # a 128-token recite segment outweighs a 4-token answer 32 to 1; "samples": each sample's
    # own mean, averaged, so every QA pair counts as much as a segment.
    loss_mean: str = "tokens"
    grad_checkpoint: bool = True  # activations of 4 x 1.5k tokens x 28 layers exceed 16 GB
    compile: bool | None = None  # None: on for Metal, off for the CPU (no faster there)
    seed: int = 0


@dataclass
class Settings:
    split: SplitSettings = field(default_factory=SplitSettings)
    synth: SynthSettings = field(default_factory=SynthSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train"]["tasks"] = list(self.train.tasks)
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
            for stage in (new.split, new.synth, new.train):
                if name in {f.name for f in dataclasses.fields(stage)}:
                    setattr(stage, name, tuple(value) if name == "tasks" else value)
                    break
            else:
                raise TypeError(f"unknown setting {name!r}")
        new.validate()
        return new

    def validate(self) -> None:
        s, q, t = self.split, self.synth, self.train
        checks = [
            (s.seg_len >= 8, "--seg-len must be at least 8 tokens"),
            (1 <= s.stride <= s.seg_len, "--stride must be between 1 and --seg-len"),
            (s.context_len >= 0, "--context-len must be 0 (off) or positive"),
            (q.qa_per_sentence >= 1, "--qa-per-sentence must be at least 1"),
            (q.sentences_per_task >= 1, "sentences per task must be at least 1"),
            (q.max_tokens >= 16, "generator max tokens must be at least 16"),
            (q.generator_batch_size >= 1, "--generator-batch-size must be at least 1"),
            (0.0 <= q.min_overlap <= 1.0, "min overlap must be between 0 and 1"),
            (bool(t.tasks) and set(t.tasks) <= set(TASKS),
             f"--tasks must be a comma-separated subset of {','.join(TASKS)}"),
            (t.rank >= 1, "--rank must be a positive integer"),
            (t.scale > 0, "--scale must be positive"),
            (t.lr > 0, "--lr must be positive"),
            (t.epochs >= 1, "--epochs must be at least 1"),
            (t.batch_size >= 1, "--batch-size must be at least 1"),
            (t.grad_clip > 0, "grad clip must be positive"),
            (t.loss_mean in ("tokens", "samples"), "--loss-mean must be tokens or samples"),
        ]
        for ok, message in checks:
            if not ok:
                raise LiftError(message)


PRESETS: dict[str, dict] = {
    "default": {},
    # The paper's main setting.
    "paper": dict(rank=128, scale=2.0, lr=5e-5, epochs=5, qa_per_sentence=10,
                  sentences_per_task=1, max_tokens=640, seg_len=2048, stride=768,
                  context_len=4096),
    # The paper's time-to-first-token setting: one QA pair per sentence, one epoch at 3e-4.
    "fast": dict(qa_per_sentence=1, lr=3e-4, epochs=1, grad_checkpoint=True),
}


def preset(name: str, model_settings: dict | None = None, **overrides) -> Settings:
    """Settings of a named preset with flat overrides applied, over the settings recommended
    for the model (its entry in models/presets.json), which come first."""
    if name not in PRESETS:
        raise LiftError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings().replace(**{**(model_settings or {}), **PRESETS[name], **given})


def setting_sources(name: str, model_settings: dict | None = None, **overrides) -> dict:
    """Where each value `preset` did not take from the defaults came from: "model", "preset
    NAME" or "option" (the last one to set it)."""
    sources = dict.fromkeys(model_settings or {}, "model")
    sources.update(dict.fromkeys(PRESETS.get(name, {}), f"preset {name}"))
    sources.update({k: "option" for k, v in overrides.items() if v is not None})
    return sources
