"""GGUF files (llama.cpp, Ollama, LM Studio) imported as mlx-lm model folders.

mlx-lm cannot load GGUF, so a file is converted once into an ordinary mlx-lm folder
(`config.json`, safetensors, tokenizer files with the chat template) under
`$LIFT_MLX_HOME/models/`, keyed by the file's sha256; `mlx_lm.load` opens the result and every
command works on it. The weights are put back in the Hugging Face layout (llama.cpp permutes
the q/k rows of llama models for its rotary kernel), so an adapter trained on an import also
fits the original model. Q4_0, Q4_1 and Q8_0 blocks map exactly onto MLX's affine
quantization (groups of 32 with a scale and a bias each) and are kept packed where quantized
matmuls are fast (Metal); on the CPU, and for every other type, weights are dequantized. The
tokenizer is rebuilt by `gguf_tokenizer`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
from mlx_lm.utils import make_shards

from .errors import LiftError
from .gguf_tokenizer import build_tokenizer, metadata
from .store import file_sha256, models_dir

ARCHITECTURES = ("llama", "qwen2")
GGUF_MAGIC = b"GGUF"
GROUP_SIZE = 32  # the block size of Q4_0, Q4_1 and Q8_0
QUANTIZED_ENV = "LIFT_MLX_GGUF_QUANTIZED"  # 1: keep 4/8-bit blocks, 0: dequantize to fp32

# GGUF tensor name -> mlx-lm name (per block: blk.N.<key>)
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
              "output": "lm_head"}
# Tensors llama.cpp derives from the config and mlx-lm recomputes itself.
_SKIPPED = ("rope_freqs",)

@dataclass
class _Tensor:
    name: str  # mlx-lm name
    type_name: str
    data: np.ndarray  # raw: float for F32/F16/BF16, uint8 blocks otherwise
    shape: tuple[int, ...]  # numpy order (rows, columns)


def default_quantized() -> bool:
    """Keep 4/8-bit blocks packed only where MLX's quantized matmuls are fast (Metal)."""
    choice = os.environ.get(QUANTIZED_ENV)
    if choice in ("0", "1"):
        return choice == "1"
    return mx.default_device().type == mx.DeviceType.gpu


def imported_path(sha256: str, quantized: bool) -> Path:
    """Where the import of the GGUF with this hash lives (complete once config.json exists)."""
    return models_dir() / f"gguf-{sha256[:20]}-{'q' if quantized else 'f32'}"


def import_gguf(path: str | Path, *, quantized: bool | None = None, sha256: str | None = None,
                quiet: bool = False, label: str | None = None) -> Path:
    """The mlx-lm folder of GGUF file `path`, converting it on first use.

    `quantized` keeps Q4_0/Q4_1/Q8_0 packed (default: on Metal only); `sha256`, when the
    caller already knows the file's hash, saves hashing it again; `label` names the model in
    messages (default: the file's name).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LiftError(f"no such GGUF file: {path}")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise LiftError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    quantized = default_quantized() if quantized is None else quantized
    sha256 = sha256 or file_sha256(path)
    out = imported_path(sha256, quantized)
    if (out / "config.json").is_file():
        return out
    label = label or path.name
    reader = _open(path)
    arch = metadata(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise LiftError(f"{label}: architecture {arch!r} is not supported (lift-mlx imports "
                        f"{', '.join(ARCHITECTURES)} GGUF models)")
    config = model_config(reader, arch)
    tensors = _tensors(reader, label)
    kept = sorted({t.type_name for t in tensors if quantized and t.type_name in _AFFINE})
    if not quiet:
        how = (f"keeping {', '.join(kept)} blocks quantized" if kept
               else "dequantizing to fp32")
        print(f"Importing {label} ({arch}, {len(tensors)} tensors): {how}; set "
              f"{QUANTIZED_ENV}={0 if kept else 1} to change", file=sys.stderr)
    weights, quantization = convert_weights(tensors, config, quantized)
    if quantization:
        config["quantization"] = config["quantization_config"] = quantization
    config["lift_mlx_source"] = {"gguf": label, "sha256": sha256}
    tokenizer = build_tokenizer(reader)
    _write_folder(out, config, weights, tokenizer)
    return out


def _open(path: Path):
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LiftError(f"{path.name} is truncated or damaged ({reason}); download it again") \
            from None


def model_config(reader, arch: str) -> dict:
    """An mlx-lm / Hugging Face config.json for the model the GGUF metadata describes."""
    def get(key, default=None):
        return metadata(reader, f"{arch}.{key}", default)

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    tokens = metadata(reader, "tokenizer.ggml.tokens") or []
    names = {t.name for t in reader.tensors}
    config = {
        "model_type": arch,
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("attention.key_length", hidden // heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 4096)),
        "vocab_size": int(get("vocab_size", len(tokens))),
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
    }
    if arch == "qwen2":
        config["attention_bias"] = True
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        value = metadata(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            config[key.replace("padding", "pad")] = int(value)
    scaling = get("rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise LiftError(f"rope scaling {scaling!r} is not supported in GGUF imports")
    if "rope_freqs.weight" in names:
        config["rope_scaling"] = _llama3_rope(reader, config)
    return config


def _llama3_rope(reader, config: dict) -> dict:
    """Llama 3.1-style rope scaling: llama.cpp stores the per-frequency factors as a tensor;
    mlx-lm computes them from four numbers, so find the numbers that give the same factors."""
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    dims, base = config["head_dim"], config["rope_theta"]
    freqs = base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    for factor, low, high, original in ((8.0, 1.0, 4.0, 8192), (32.0, 1.0, 4.0, 8192)):
        low_len, high_len = original / low, original / high
        wavelen = 2 * np.pi * freqs
        smooth = (original / wavelen - low) / (high - low)
        expected = np.where(wavelen < high_len, 1.0,
                            np.where(wavelen > low_len, factor, 1 / ((1 - smooth) / factor
                                                                     + smooth)))
        if np.allclose(expected, np.asarray(factors, np.float64), rtol=1e-3):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": original}
    raise LiftError("this GGUF's rope frequency factors match no known Llama 3 scaling; "
                    "it cannot be imported faithfully")


def _mlx_name(gguf_name: str) -> str | None:
    base, _, suffix = gguf_name.rpartition(".")
    if base.split(".")[0] in _SKIPPED:
        return None
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{suffix}"
    raise LiftError(f"unexpected tensor {gguf_name!r} in the GGUF file; it cannot be imported "
                    "faithfully")


def _tensors(reader, label: str) -> list[_Tensor]:
    out = []
    for t in reader.tensors:
        name = _mlx_name(t.name)
        if name is None:
            continue
        type_name = t.tensor_type.name
        if type_name not in _AFFINE and type_name not in _FLOAT and not _dequantizable(t):
            raise LiftError(f"{label}: tensor type {type_name} ({t.name}) is not supported")
        shape = tuple(int(n) for n in reversed(t.shape))
        out.append(_Tensor(name, type_name, t.data, shape))
    return out


_FLOAT = ("F32", "F16", "BF16")


def _dequantizable(tensor) -> bool:
    try:
        gguf.quants.dequantize(tensor.data[:1], tensor.tensor_type)
    except (NotImplementedError, ValueError, KeyError):
        return False
    return True


def _affine_q8_0(blocks: np.ndarray):
    d = blocks[..., :2].copy().view(np.float16)[..., 0]
    q = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return q, d, (-128 * d.astype(np.float32)).astype(np.float16), 8


def _affine_q4(blocks: np.ndarray, with_min: bool):
    d = blocks[..., :2].copy().view(np.float16)[..., 0]
    if with_min:
        bias, packed = blocks[..., 2:4].copy().view(np.float16)[..., 0], blocks[..., 4:]
    else:  # Q4_0 stores q - 8
        bias, packed = (-8 * d.astype(np.float32)).astype(np.float16), blocks[..., 2:]
    # A block's low nibbles are its elements 0-15, the high nibbles 16-31.
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=-1)
    return q, d, bias, 4


_AFFINE = {
    "Q8_0": (34, _affine_q8_0),
    "Q4_0": (18, lambda b: _affine_q4(b, with_min=False)),
    "Q4_1": (20, lambda b: _affine_q4(b, with_min=True)),
}


def affine_blocks(tensor: _Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A Q4_0/Q4_1/Q8_0 tensor as MLX affine-quantized arrays: (packed uint32 weights,
    scales, biases, bits), exactly the values the blocks hold."""
    rows, cols = tensor.shape
    block_bytes, convert = _AFFINE[tensor.type_name]
    blocks = np.ascontiguousarray(tensor.data).reshape(rows, cols // GROUP_SIZE, block_bytes)
    q, scales, biases, bits = convert(blocks)
    q = q.reshape(rows, cols)
    if bits == 4:  # MLX packs element k of each 8 at bits 4k of a uint32
        q = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(q).view(np.uint32), scales, biases, bits


def dequantized(tensor: _Tensor) -> np.ndarray:
    """The tensor's values as float32, in numpy order."""
    if tensor.type_name in _FLOAT:
        return np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    if tensor.type_name in _AFFINE:
        q, scales, biases, bits = affine_blocks(tensor)
        values = _unpack(q, bits).reshape(*scales.shape, GROUP_SIZE).astype(np.float32)
        values = values * scales[..., None].astype(np.float32) + biases[..., None]
        return values.reshape(tensor.shape)
    return gguf.quants.dequantize(tensor.data, _gguf_type(tensor.type_name)).reshape(
        tensor.shape).astype(np.float32)


def _gguf_type(name: str):
    return gguf.GGMLQuantizationType[name]


def _unpack(q: np.ndarray, bits: int) -> np.ndarray:
    raw = q.view(np.uint8)
    if bits == 8:
        return raw
    return np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(raw.shape[0], -1)


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (rotary pairs interleaved) back to Hugging Face's."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_weights(tensors: list[_Tensor], config: dict, quantized: bool):
    """mlx-lm weights (name -> mx.array) and the config's per-layer quantization (or None)."""
    heads = {"self_attn.q_proj": config["num_attention_heads"],
             "self_attn.k_proj": config["num_key_value_heads"]}
    permute = config["model_type"] == "llama"
    weights, layers = {}, {}
    for t in tensors:
        module, _, suffix = t.name.rpartition(".")
        n_heads = next((n for key, n in heads.items() if module.endswith(key)), None)
        fix = partial(_unpermute, heads=n_heads) if permute and n_heads else _same
        if quantized and t.type_name in _AFFINE and len(t.shape) == 2:
            q, scales, biases, bits = affine_blocks(t)
            weights[f"{module}.weight"] = mx.array(fix(q))
            weights[f"{module}.scales"] = mx.array(fix(scales))
            weights[f"{module}.biases"] = mx.array(fix(biases))
            layers[module] = {"group_size": GROUP_SIZE, "bits": bits}
        else:
            weights[t.name] = mx.array(fix(dequantized(t)))
    if not layers:
        return weights, None
    # Layers stored unquantized (other types) must not be quantized by mlx-lm's loader.
    for name in weights:
        module = name.rpartition(".")[0]
        if name.endswith(".weight") and module not in layers and _linear_like(module):
            layers[module] = False
    bits = [v["bits"] for v in layers.values() if v]
    common = max(set(bits), key=bits.count)
    return weights, {"group_size": GROUP_SIZE, "bits": common, **layers}


def _linear_like(module: str) -> bool:
    return module.endswith(("_proj", "embed_tokens", "lm_head"))


def _write_folder(out: Path, config: dict, weights: dict, tokenizer) -> None:
    """Write the folder under a temporary name and rename it when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        shards = make_shards(weights)
        index = {}
        for i, shard in enumerate(shards):
            name = ("model.safetensors" if len(shards) == 1
                    else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
            mx.save_safetensors(str(tmp / name), shard, metadata={"format": "mlx"})
            index.update(dict.fromkeys(shard, name))
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": dict(sorted(index.items()))}, indent=2))
        tokenizer.save_pretrained(tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is ordinary data
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same import first
            if not (out / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
