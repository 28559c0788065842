"""Tiny random-weight models with a locally trained tokenizer, loadable offline by mlx-lm.

They exist so that everything can be tested on a machine that cannot reach the model hub:
`mlx_lm.load(path)` works on them exactly as on a downloaded model.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import quantize_model, save_config, save_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from . import prompts

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with ChatML special tokens, as a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def default_corpus() -> list[str]:
    """Text for the tokenizer: the bundled demo document and the project's prompt wording."""
    data = Path(__file__).parent / "data"
    # demo.md alone: the tokenizer (and so every tiny model's weights) must not change when
    # another document is bundled.
    texts = [(data / "demo.md").read_text(encoding="utf-8")]
    texts += [prompts.RECITE_INSTRUCTION, prompts.CONTEXT_HEADER, prompts.QUESTION_HEADER,
              prompts.GENERATOR_INSTRUCTIONS, prompts.qa_json([("What is it?", "A test.")])]
    return texts


def build_tiny_model(
    out: str | Path,
    *,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    max_position_embeddings: int = 1024,
    quantize_bits: int | None = None,
    corpus: list[str] | None = None,
    tokenizer=None,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight `arch` model (llama or qwen2) and its tokenizer to `out`
    (`num_kv_heads` below `num_heads`: grouped-query attention)."""
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"arch must be llama or qwen2, not {arch!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = train_tokenizer(corpus or default_corpus(), vocab_size)
    tokenizer.save_pretrained(out)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = {
        "model_type": arch,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads or num_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }
    if arch == "qwen2":
        config["attention_bias"] = True  # qwen2 has biased q/k/v projections
    (out / "config.json").write_text(json.dumps(config))
    mx.random.seed(seed)
    # mlx-lm's own model class guarantees the weights have the names it will load.
    arch_module = importlib.import_module(f"mlx_lm.models.{arch}")
    model = arch_module.Model(arch_module.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    if quantize_bits:
        group = 64 if hidden_size % 64 == 0 and intermediate_size % 64 == 0 else 32
        model, config = quantize_model(model, config, group_size=group, bits=quantize_bits)
    save_model(out, model)
    save_config(config, out / "config.json")
    return out
