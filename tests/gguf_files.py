"""Small GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes them, for tests.

`write_gguf` turns a tiny mlx-lm model folder into a GGUF file and returns the weights an exact
importer must give back: what the file really holds, dequantized, in mlx-lm names and layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from gguf import (
    GGML_QUANT_VERSION,
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
    TokenType,
    quants,
)

QType = GGMLQuantizationType
F32 = QType.F32

# mlx-lm parameter names inside a layer -> GGUF tensor names inside blk.N
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}

FILE_TYPES = {
    QType.F32: LlamaFileType.ALL_F32,
    QType.F16: LlamaFileType.MOSTLY_F16,
    QType.BF16: LlamaFileType.MOSTLY_BF16,
    QType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    QType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    QType.Q4_1: LlamaFileType.MOSTLY_Q4_1,
    QType.Q5_0: LlamaFileType.MOSTLY_Q5_0,
    QType.Q5_1: LlamaFileType.MOSTLY_Q5_1,
    QType.Q4_K: LlamaFileType.MOSTLY_Q4_K_M,
}


def gguf_name(name: str) -> str:
    """The GGUF tensor name of an mlx-lm parameter name (model.layers.0.mlp.up_proj.weight ...)."""
    if m := re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name):
        return f"blk.{m[1]}.{LAYER_NAMES[m[2]]}.{m[3]}"
    module, kind = name.rsplit(".", 1)
    return f"{TOP_NAMES[module]}.{kind}"


def tensor_order(name: str) -> tuple[int, int, str]:
    """Sort key putting tensors in llama.cpp's order: embeddings, blocks by number, head."""
    if m := re.match(r"model\.layers\.(\d+)\.", name):
        return (1, int(m[1]), name)
    return (0 if "embed_tokens" in name else 2, 0, name)


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved-pairs layout."""
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `rope_permute`."""
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize_q4_k(w: np.ndarray) -> np.ndarray:
    """Q4_K blocks for `w` (rows a multiple of 256): gguf-py 0.19 only dequantizes K-quants.

    Any valid encoding serves the tests, so this takes the plain min/max scale per 32-value
    sub-block rather than llama.cpp's error-minimising search.
    """
    blocks = w.astype(np.float32).reshape(-1, 8, 32)  # super-block of 8 sub-blocks
    lo = np.minimum(blocks.min(axis=-1), 0.0)  # the format subtracts a non-negative min
    hi = np.maximum(blocks.max(axis=-1), lo)
    scale, minimum = (hi - lo) / 15, -lo
    d = (scale.max(axis=-1) / 63).astype(np.float16)
    dmin = (minimum.max(axis=-1) / 63).astype(np.float16)

    def six_bit(x: np.ndarray, step: np.ndarray) -> np.ndarray:
        step = step.astype(np.float32)[:, None]
        safe = np.where(step > 0, step, 1.0)
        return np.where(step > 0, np.clip(np.rint(x / safe), 0, 63), 0).astype(np.uint8)

    sc, mn = six_bit(scale, d), six_bit(minimum, dmin)
    # Quantize against the scales as the reader will rebuild them, so rounding does not drift.
    sub_d = (d.astype(np.float32)[:, None] * sc)[..., None]
    sub_m = (dmin.astype(np.float32)[:, None] * mn)[..., None]
    q = np.where(sub_d > 0, np.rint((blocks + sub_m) / np.where(sub_d > 0, sub_d, 1.0)), 0)
    q = np.clip(q, 0, 15).astype(np.uint8)

    # 12 scale bytes: low 6 bits of sub-blocks 0-3 (scales, then mins); sub-blocks 4-7 keep
    # their low nibbles in bytes 8-11 and their top 2 bits in the spare bits of bytes 0-7.
    packed = np.empty((len(blocks), 12), dtype=np.uint8)
    packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    # 128 nibble bytes: each 32-byte group holds sub-block 2i low and sub-block 2i+1 high.
    nibbles = q[:, 0::2] | (q[:, 1::2] << 4)
    out = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8),
                          packed, nibbles.reshape(len(blocks), 128)], axis=1)
    return out.reshape(*w.shape[:-1], w.shape[-1] // 256 * 144)


def quantize(w: np.ndarray, qtype: QType) -> np.ndarray:
    """`w` as GGUF stores it in `qtype`: float arrays for F32/F16, uint8 blocks otherwise.

    A type gguf-py cannot encode gets zero bytes of the right size, so a test file can carry
    a tensor no reader decodes.
    """
    if qtype == QType.Q4_K:
        return quantize_q4_k(w)
    try:
        return quants.quantize(w, qtype)
    except NotImplementedError:
        return np.zeros(quants.quant_shape_to_byte_shape(w.shape, qtype), dtype=np.uint8)


def read_tokenizer(model_dir: Path) -> dict[str, Any]:
    """Tokens, types, merges, special ids and chat template, as llama.cpp's gpt2 vocab has them."""
    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    by_id = {i: (t, TokenType.NORMAL) for t, i in tok["model"]["vocab"].items()}
    for added in tok["added_tokens"]:
        kind = TokenType.CONTROL if added["special"] else TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    size = max(by_id) + 1
    # llama.cpp fills holes in the id range with unused placeholders; keep the same habit.
    tokens = [by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    template = tok_config.get("chat_template")
    if template is None and (model_dir / "chat_template.jinja").exists():
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    ids = {t: i for i, (t, _) in enumerate(tokens)}

    def special_id(key: str) -> int | None:
        value = tok_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return ids.get(value) if value else None

    return {
        "tokens": [t for t, _ in tokens],
        "types": [int(k) for _, k in tokens],
        "merges": merges,
        "chat_template": template,
        "bos": special_id("bos_token"),
        "eos": special_id("eos_token"),
        "pad": special_id("pad_token"),
    }


def write_gguf(
    model_dir: Path,
    out: Path,
    *,
    qtype: QType | dict[str, QType] = F32,
    pre: str = "smollm",
    arch: str | None = None,
    **overrides: Any,
) -> dict[str, np.ndarray]:
    """Write `model_dir` (a tiny llama or qwen2) as GGUF at `out`; return the reference weights.

    `arch` renames the architecture; each override replaces `GGUFWriter.add_<key>`'s value
    (None leaves the key out). The return maps mlx-lm names to the dequantized fp32 weights.
    """
    model_dir, out = Path(model_dir), Path(out)
    config = json.loads((model_dir / "config.json").read_text())
    model_type = config["model_type"]
    arch = arch or model_type
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    weights = {k: np.array(v, dtype=np.float32)
               for k, v in mx.load(str(model_dir / "model.safetensors")).items()}

    def type_of(gguf: str, w: np.ndarray) -> QType:
        if w.ndim < 2:  # norms and biases stay F32, as in llama.cpp's own files
            return F32
        return qtype.get(gguf, F32) if isinstance(qtype, dict) else qtype

    main_type = qtype if not isinstance(qtype, dict) else max(
        qtype.values(), key=list(qtype.values()).count, default=F32)
    vocab = read_tokenizer(model_dir)
    meta: dict[str, Any] = {
        "name": model_dir.name,
        "context_length": config["max_position_embeddings"],
        "embedding_length": config["hidden_size"],
        "block_count": config["num_hidden_layers"],
        "feed_forward_length": config["intermediate_size"],
        "head_count": n_head,
        "head_count_kv": n_kv,
        "layer_norm_rms_eps": config["rms_norm_eps"],
        "rope_freq_base": config.get("rope_theta", 10000.0),
        "rope_dimension_count": head_dim,
        "vocab_size": config["vocab_size"],
        "file_type": FILE_TYPES.get(main_type, LlamaFileType.GUESSED),
        "quantization_version": GGML_QUANT_VERSION,
        "tokenizer_model": "gpt2",
        "tokenizer_pre": pre,
        "token_list": vocab["tokens"],
        "token_types": vocab["types"],
        "token_merges": vocab["merges"],
        "bos_token_id": vocab["bos"],
        "eos_token_id": vocab["eos"],
        "pad_token_id": vocab["pad"],
        "add_bos_token": False,
        "chat_template": vocab["chat_template"],
    }
    meta.update(overrides)

    writer = GGUFWriter(out, arch)
    for key, value in meta.items():
        if value is not None:
            getattr(writer, f"add_{key}")(value)
    reference = {}
    for name, w in sorted(weights.items(), key=lambda kv: tensor_order(kv[0])):
        target = gguf_name(name)
        # llama.cpp reorders llama's q/k rows for its rope kernel; qwen2 it leaves as HF has it.
        heads = {"q_proj": n_head, "k_proj": n_kv}.get(name.split(".")[-2])
        permute = model_type == "llama" and heads is not None
        if permute:
            w = rope_permute(w, heads)
        t = type_of(target, w)
        data = quantize(w, t)
        writer.add_tensor(target, data, raw_dtype=t)
        try:
            held = quants.dequantize(data, t).astype(np.float32)
        except NotImplementedError:
            continue  # no reference for what nothing can read
        reference[name] = rope_unpermute(held, heads) if permute else held
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return reference
