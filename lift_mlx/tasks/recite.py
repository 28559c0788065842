"""`recite`: the document's segments, each recited after an optional head+tail view of the
document (the paper's segment training, contextualized)."""

from __future__ import annotations

import random

from ..samples import Sample, recite_samples
from .base import Task, TaskInput


class Recite(Task):
    name = "recite"
    help = "segments of the text"
    order = 0

    def samples(self, given: TaskInput) -> list[Sample]:
        s = given.settings.split
        rng = random.Random(given.settings.train.seed)
        return recite_samples(given.tokenizer, given.doc_tokens, s.seg_len, s.stride,
                              s.context_len, rng)


TASK = Recite()
