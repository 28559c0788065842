"""Mean token NLL of a document under the base model and under an adapter.

    python scripts/document_nll.py DOC ADAPTER_DIR [--seg-len 256]

Two measures, each over every token of the document in non-overlapping windows:
  plain   the document as plain text (no prompt);
  recite  each window after the recite instruction, as absorb trains it (no context prefix).
Prints both and the ratio adapted / base.
"""

from __future__ import annotations

import json
import random

import click

import lift_mlx  # noqa: F401  (optional BLAS before mlx)
from lift_mlx.absorbed import load_absorbed, reset_adapter
from lift_mlx.ingest import read_document
from lift_mlx.prompts import encode
from lift_mlx.samples import Sample, recite_samples
from lift_mlx.train import mean_nll


def measures(lm, doc_tokens: list[int], seg_len: int) -> dict[str, float]:
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    plain = [Sample(tuple(doc_tokens[i:i + seg_len]), (1,) * len(doc_tokens[i:i + seg_len]),
                    "doc") for i in range(0, len(doc_tokens), seg_len)]
    recite = recite_samples(tok, doc_tokens, seg_len, seg_len, 0, random.Random(0))
    return {"plain": mean_nll(lm.model, plain, pad), "recite": mean_nll(lm.model, recite, pad)}


@click.command()
@click.argument("document")
@click.argument("adapter", type=click.Path(exists=True, file_okay=False))
@click.option("--seg-len", default=256, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(document, adapter, seg_len, json_out):
    absorbed = load_absorbed(adapter)
    doc_tokens = encode(absorbed.lm.tokenizer, read_document(document).text)
    adapted = measures(absorbed.lm, doc_tokens, seg_len)
    reset_adapter(absorbed.lm)
    base = measures(absorbed.lm, doc_tokens, seg_len)
    rows = {k: {"base": base[k], "adapted": adapted[k], "ratio": adapted[k] / base[k]}
            for k in base}
    click.echo(f"{'measure':<8} {'base':>8} {'adapted':>8} {'ratio':>6}")
    for k, r in rows.items():
        click.echo(f"{k:<8} {r['base']:>8.3f} {r['adapted']:>8.3f} {r['ratio']:>6.3f}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"document": document, "adapter": adapter, "tokens": len(doc_tokens),
                       **rows}, f, indent=2)


if __name__ == "__main__":
    main()
