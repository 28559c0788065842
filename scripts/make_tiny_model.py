"""Build a tiny random-weight model with a locally trained tokenizer, loadable offline.

    python scripts/make_tiny_model.py OUT [--arch llama|qwen2] [--quantize 4]

`mlx_lm.load(OUT)` loads it with no network. The bundled `models/tiny-llama` was made with
`python scripts/make_tiny_model.py models/tiny-llama`.
"""

from __future__ import annotations

import click
from mlx_lm.utils import get_total_parameters

from lift_mlx.tiny import build_tiny_model


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--arch", type=click.Choice(["llama", "qwen2"]), default="llama", show_default=True)
@click.option("--quantize", "bits", type=click.Choice(["4", "8"]), default=None,
              help="Quantize the linear layers to this many bits (QLoRA base).")
@click.option("--hidden-size", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--heads", default=4, show_default=True)
@click.option("--vocab-size", default=512, show_default=True)
@click.option("--window", default=1024, show_default=True, help="max_position_embeddings")
@click.option("--seed", default=0, show_default=True)
def main(out, arch, bits, hidden_size, layers, heads, vocab_size, window, seed):
    path = build_tiny_model(
        out, arch=arch, hidden_size=hidden_size, num_layers=layers, num_heads=heads,
        intermediate_size=2 * hidden_size, vocab_size=vocab_size,
        max_position_embeddings=window, quantize_bits=int(bits) if bits else None, seed=seed,
    )
    from mlx_lm import load

    model, _ = load(str(path))
    click.echo(f"{path}: {arch}, {get_total_parameters(model):,} parameters")


if __name__ == "__main__":
    main()
