"""GGUF import: the imported mlx-lm folder computes what the GGUF file holds, tokenizes like
the original model, and bad files fail with one clear line and leave nothing behind."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gguf import GGUFReader
from gguf_files import F32, QType, gguf_name, rope_permute, write_gguf

from lift_mlx.errors import LiftError
from lift_mlx.gguf_import import QUANTIZED_ENV, import_gguf
from lift_mlx.tiny import build_tiny_model

# Fixed ids spread over the whole vocabulary (512), so every embedding row range is exercised.
IDS = mx.array(np.random.default_rng(0).integers(0, 512, size=48))[None]
EXACT = 1e-4  # fp32 on both sides: only summation order differs
PACKED_REL = 1e-3  # MLX keeps scales and biases of packed weights in half precision

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Café, naïve, résumé, Ångström, Zürich, São Paulo",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 🚀🔥👍🏽 and family 👨‍👩‍👧",
    "def f(x):\n\tif x:\n\t\treturn [i for i in range(3)]\n    return None\n",
    "pi is 3.14159, a million is 1,234,567 and 2004 was a year; 0x1F 007",
    "many    spaces   here\n\n\n  and\r\nnewlines \t mixed  ",
    "  leading spaces and trailing ones   ",
    "<|im_start|>user\nhello<|im_end|>\n<|endoftext|>",
    "",
]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
CONVERSATION = [
    {"role": "user", "content": "What is 3.14159 rounded? Réponds en français 🙂"},
    {"role": "assistant", "content": "Environ 3,14.\n\tVoilà."},
]


@pytest.fixture(scope="module")
def kquant_model_path(tmp_path_factory) -> Path:
    """A llama whose rows fit K-quant super-blocks (256 values)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "kquant-llama", hidden_size=256,
                            intermediate_size=512)


def derived_model(src: Path, out: Path, config: dict, weights) -> Path:
    """A copy of model folder `src` with `config` merged in and its weights passed through
    `weights` (a function of the weight dict)."""
    shutil.copytree(src, out)
    merged = json.loads((out / "config.json").read_text()) | config
    (out / "config.json").write_text(json.dumps(merged))
    changed = weights(mx.load(str(out / "model.safetensors")))
    mx.save_safetensors(str(out / "model.safetensors"), changed)
    (out / "model.safetensors.index.json").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def untied_model_path(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny llama with its own output matrix, so the GGUF file has an `output` tensor."""
    def add_head(w: dict) -> dict:
        mx.random.seed(3)
        return w | {"lm_head.weight": 0.05 * mx.random.normal(w["model.embed_tokens.weight"].shape)}

    return derived_model(tiny_model_path, tmp_path_factory.mktemp("models") / "untied-llama",
                         {"tie_word_embeddings": False}, add_head)


@pytest.fixture(scope="module")
def gqa_model_path(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny llama with 2 key/value heads for its 4 query heads: k is permuted per kv head."""
    def two_kv_heads(w: dict) -> dict:
        keep = 2 * 16  # two heads of 16 rows
        return {k: v[:keep] if k.endswith(("k_proj.weight", "v_proj.weight")) else v
                for k, v in w.items()}

    return derived_model(tiny_model_path, tmp_path_factory.mktemp("models") / "gqa-llama",
                         {"num_key_value_heads": 2}, two_kv_heads)


def logits(model) -> np.ndarray:
    return np.array(model(IDS)[0].astype(mx.float32))


def reference_logits(model_dir: Path, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of the original architecture carrying `weights` (mlx-lm names, HF layout)."""
    model, _ = mlx_lm.load(str(model_dir))
    model.load_weights([(k, mx.array(v)) for k, v in weights.items()])
    return logits(model)


def folder_weights(folder: Path) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(mx.load(str(f)))
    return out


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def assert_nothing_complete(home: Path) -> None:
    models = home / "models"
    leftovers = list(models.rglob("config.json")) if models.exists() else []
    assert leftovers == [], f"a failed import left a complete-looking model: {leftovers}"


# -- the test files themselves --------------------------------------------------------------


def test_written_file_reads_back_as_llama_cpp_writes_it(tiny_model_path, tmp_path):
    path = tmp_path / "m.gguf"
    types = {"token_embd.weight": QType.Q8_0, "blk.0.attn_q.weight": QType.Q4_0}
    ref = write_gguf(tiny_model_path, path, qtype=types, pre="gpt-2")
    reader = GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2 and fields["llama.embedding_length"] == 64
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokenizer.ggml.tokens"]) == 512
    assert fields["tokenizer.ggml.token_type"][:3] == [3, 3, 3]  # the ChatML specials
    assert fields["tokenizer.ggml.merges"][0].count(" ") == 1
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {gguf_name(k) for k in ref}
    assert "output.weight" not in tensors  # tied embeddings
    assert tensors["token_embd.weight"].tensor_type == QType.Q8_0
    assert tensors["blk.0.attn_q.weight"].tensor_type == QType.Q4_0
    assert tensors["blk.1.attn_q.weight"].tensor_type == F32
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [128, 64]  # ggml order: columns first
    # The file holds q permuted; the reference is given back in HF order.
    q = np.array(tensors["blk.1.attn_q.weight"].data)
    assert np.array_equal(q, rope_permute(ref["model.layers.1.self_attn.q_proj.weight"], 4))


# -- weights and logits ---------------------------------------------------------------------


def model_for(kind: str, request) -> Path:
    name = {"llama": "tiny_model_path", "qwen2": "other_model_path", "gqa": "gqa_model_path",
            "kquant": "kquant_model_path"}[kind]
    return request.getfixturevalue(name)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gqa"])
def test_f32_import_gives_the_original_logits(arch, request, tmp_path):
    model_dir = model_for(arch, request)
    write_gguf(model_dir, tmp_path / "m.gguf")
    folder = import_gguf(tmp_path / "m.gguf", quantized=False)
    assert (folder / "config.json").is_file()
    imported, _ = mlx_lm.load(str(folder))
    original, _ = mlx_lm.load(str(model_dir))
    diff = max_diff(logits(imported), logits(original))
    print(f"max |dlogit| {arch} F32 vs original: {diff:.3g}")
    assert diff < EXACT


def test_untied_output_matrix_is_used(untied_model_path, tmp_path):
    write_gguf(untied_model_path, tmp_path / "m.gguf")
    imported, _ = mlx_lm.load(str(import_gguf(tmp_path / "m.gguf", quantized=False)))
    original, _ = mlx_lm.load(str(untied_model_path))
    diff = max_diff(logits(imported), logits(original))
    print(f"max |dlogit| llama untied F32 vs original: {diff:.3g}")
    assert diff < EXACT


CASES = [
    ("llama", QType.F16),
    ("llama", QType.Q8_0),
    ("llama", QType.Q4_0),
    ("llama", QType.Q4_1),
    ("gqa", QType.Q4_0),
    ("kquant", QType.Q4_K),
    ("qwen2", QType.Q4_0),
    ("qwen2", QType.Q8_0),
]


@pytest.mark.parametrize(("kind", "qtype"), CASES, ids=[f"{k}-{q.name}" for k, q in CASES])
def test_dequantized_import_matches_what_the_file_holds(kind, qtype, request, tmp_path):
    model_dir = model_for(kind, request)
    ref = write_gguf(model_dir, tmp_path / "m.gguf", qtype=qtype)
    folder = import_gguf(tmp_path / "m.gguf", quantized=False)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization" not in config
    imported, _ = mlx_lm.load(str(folder))
    expected = reference_logits(model_dir, ref)
    diff = max_diff(logits(imported), expected)
    print(f"max |dlogit| {kind} {qtype.name} dequantized vs file reference: {diff:.3g}")
    assert diff < EXACT


def test_mixed_types_dequantize_each_tensor_by_its_own_type(kquant_model_path, tmp_path):
    types = {"token_embd.weight": QType.Q8_0}
    for i in range(2):
        types |= {f"blk.{i}.attn_{p}.weight": QType.Q4_1 for p in ("q", "k", "v", "output")}
        types |= {f"blk.{i}.ffn_{p}.weight": QType.Q4_K for p in ("gate", "up")}
        types[f"blk.{i}.ffn_down.weight"] = QType.F16
    ref = write_gguf(kquant_model_path, tmp_path / "m.gguf", qtype=types)
    imported, _ = mlx_lm.load(str(import_gguf(tmp_path / "m.gguf", quantized=False)))
    diff = max_diff(logits(imported), reference_logits(kquant_model_path, ref))
    print(f"max |dlogit| mixed Q8_0/Q4_1/Q4_K/F16 dequantized vs file reference: {diff:.3g}")
    assert diff < EXACT


PACKED = [(QType.Q4_0, 4), (QType.Q4_1, 4), (QType.Q8_0, 8)]


def packed_rel_diff(folder, model_path, ref, label: str) -> float:
    """Largest logit difference of an import kept packed against the file's own values,
    relative to the largest logit (printed for the closing note)."""
    imported, _ = mlx_lm.load(str(folder))
    expected = reference_logits(model_path, ref)
    diff = max_diff(logits(imported), expected)
    rel = diff / np.abs(expected).max()
    print(f"max |dlogit| {label} packed vs file reference: {diff:.3g} (rel {rel:.2g})")
    return rel


@pytest.mark.parametrize(("qtype", "bits"), PACKED, ids=[q.name for q, _ in PACKED])
def test_quantized_import_keeps_weights_packed(qtype, bits, tiny_model_path, tmp_path):
    ref = write_gguf(tiny_model_path, tmp_path / "m.gguf", qtype=qtype)
    folder = import_gguf(tmp_path / "m.gguf", quantized=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"]["group_size"] == 32 and config["quantization"]["bits"] == bits
    weights = folder_weights(folder)
    for name, w in ref.items():
        if w.ndim < 2:
            continue
        module = name.removesuffix(".weight")
        packed = weights[name]
        assert packed.dtype == mx.uint32 and packed.shape == (w.shape[0], w.shape[1] * bits // 32)
        unpacked = mx.dequantize(packed, weights[f"{module}.scales"], weights[f"{module}.biases"],
                                 group_size=32, bits=bits)
        assert max_diff(np.array(unpacked.astype(mx.float32)), w) <= PACKED_REL * np.abs(w).max()
    assert packed_rel_diff(folder, tiny_model_path, ref, f"llama {qtype.name}") < PACKED_REL


def test_quantized_import_of_mixed_file_packs_only_the_affine_types(kquant_model_path, tmp_path):
    types = {f"blk.{i}.ffn_{p}.weight": QType.Q4_K for i in range(2) for p in ("gate", "up")}
    types |= {f"blk.{i}.attn_{p}.weight": QType.Q8_0 for i in range(2) for p in "qkv"}
    ref = write_gguf(kquant_model_path, tmp_path / "m.gguf", qtype=types)
    folder = import_gguf(tmp_path / "m.gguf", quantized=True)
    weights = folder_weights(folder)
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    assert weights["model.layers.0.mlp.gate_proj.weight"].dtype != mx.uint32
    rel = packed_rel_diff(folder, kquant_model_path, ref, "mixed Q8_0(packed)/Q4_K/F32")
    assert rel < PACKED_REL


@pytest.mark.parametrize("choice", ["0", "1"])
def test_default_form_follows_the_environment(choice, tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv(QUANTIZED_ENV, choice)
    write_gguf(tiny_model_path, tmp_path / "m.gguf", qtype=QType.Q8_0)
    config = json.loads((import_gguf(tmp_path / "m.gguf") / "config.json").read_text())
    assert ("quantization" in config) == (choice == "1")


def test_rope_permutation_of_q_and_k_is_undone(tiny_model_path, tmp_path):
    ref = write_gguf(tiny_model_path, tmp_path / "m.gguf")
    folder = import_gguf(tmp_path / "m.gguf", quantized=False)
    weights = folder_weights(folder)
    original = mx.load(str(tiny_model_path / "model.safetensors"))
    for name in ("model.layers.0.self_attn.q_proj.weight",
                 "model.layers.1.self_attn.k_proj.weight"):
        assert np.array_equal(np.array(weights[name]), np.array(original[name]))
    # The rows as the file stores them would give another model: the undo is what matters.
    as_stored = dict(ref)
    for name in ref:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            as_stored[name] = rope_permute(ref[name], 4)
    imported, _ = mlx_lm.load(str(folder))
    got, expected = logits(imported), reference_logits(tiny_model_path, ref)
    wrong = max_diff(reference_logits(tiny_model_path, as_stored), expected)
    diff = max_diff(got, expected)
    print(f"max |dlogit| llama F32 import: {diff:.3g}; if q/k stayed permuted: {wrong:.3g}")
    assert diff < EXACT and wrong > 100 * EXACT


# -- tokenizer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers_pair(tiny_model_path, tmp_path_factory):
    """The original tiny tokenizer and the one imported from its GGUF file (pre "gpt-2")."""
    path = tmp_path_factory.mktemp("gguf") / "tok.gguf"
    write_gguf(tiny_model_path, path, pre="gpt-2")
    # A module-scoped import runs outside the per-test store, so it gets a store of its own.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_MLX_HOME", str(tmp_path_factory.mktemp("lift-home")))
        folder = import_gguf(path, quantized=False)
    _, imported = mlx_lm.load(str(folder))
    _, original = mlx_lm.load(str(tiny_model_path))
    return original, imported


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_encodes_and_decodes_like_the_original(text, tokenizers_pair):
    original, imported = tokenizers_pair
    ids = imported.encode(text, add_special_tokens=False)
    assert ids == original.encode(text, add_special_tokens=False)
    assert imported.encode(text) == original.encode(text)
    assert imported.decode(ids) == original.decode(ids) == text


def test_special_tokens_and_chat_template_match(tokenizers_pair):
    original, imported = tokenizers_pair
    for token in SPECIAL:
        assert imported.convert_tokens_to_ids(token) == original.convert_tokens_to_ids(token)
    assert imported.eos_token_id == original.eos_token_id
    assert imported.pad_token_id == original.pad_token_id
    rendered = imported.apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered == original.apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered.startswith("<|im_start|>user\n")
    for prompt in (False, True):
        got = imported.apply_chat_template(CONVERSATION, add_generation_prompt=prompt)
        assert got == original.apply_chat_template(CONVERSATION, add_generation_prompt=prompt)


# Longest digit run one token may hold under each pre-tokenizer's split rule.
DIGIT_RUNS = {"gpt-2": None, "llama-bpe": 3, "qwen2": 1, "smollm": 1}


@pytest.mark.parametrize("pre", list(DIGIT_RUNS))
def test_pre_tokenizer_name_chooses_the_split_rule(pre, tiny_model_path, tmp_path):
    write_gguf(tiny_model_path, tmp_path / "m.gguf", pre=pre)
    _, tok = mlx_lm.load(str(import_gguf(tmp_path / "m.gguf", quantized=False)))
    text = "In 2004 and 1,234,567 and 3.14159"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    longest = max(len(run) for t in tok.convert_ids_to_tokens(ids) for run in re.findall(r"\d+", t))
    if DIGIT_RUNS[pre] is None:
        assert longest > 3  # the byte-level merges learned "Ġ2004"; gpt-2 splitting keeps it
    else:
        assert longest <= DIGIT_RUNS[pre]


# -- user mistakes --------------------------------------------------------------------------


def test_not_a_gguf_file(tmp_path, isolated_store):
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, renamed\n" * 20)
    with pytest.raises(LiftError, match="not a GGUF file") as err:
        import_gguf(path)
    assert "\n" not in str(err.value)
    assert_nothing_complete(isolated_store)


def test_truncated_gguf(tiny_model_path, tmp_path, isolated_store):
    full = tmp_path / "full.gguf"
    write_gguf(tiny_model_path, full)
    data = full.read_bytes()
    half = tmp_path / "half.gguf"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(LiftError, match="truncated") as err:
        import_gguf(half)
    assert "\n" not in str(err.value)
    assert_nothing_complete(isolated_store)


@pytest.mark.parametrize("arch", ["gpt2", "mamba"])
def test_unsupported_architecture(arch, tiny_model_path, tmp_path, isolated_store):
    write_gguf(tiny_model_path, tmp_path / "m.gguf", arch=arch)
    with pytest.raises(LiftError, match=arch) as err:
        import_gguf(tmp_path / "m.gguf")
    assert "\n" not in str(err.value)
    assert_nothing_complete(isolated_store)


def test_unsupported_tensor_type(tiny_model_path, tmp_path, isolated_store):
    # gguf-py cannot dequantize Q8_1 (llama.cpp's activation-only type), so no importer built on
    # it can hold this tensor; the bytes only need the right size.
    path = tmp_path / "m.gguf"
    write_gguf(tiny_model_path, path, qtype={"blk.0.ffn_up.weight": QType.Q8_1})
    with pytest.raises(LiftError, match="Q8_1") as err:
        import_gguf(path)
    assert "\n" not in str(err.value)
    assert_nothing_complete(isolated_store)


def test_unknown_pre_tokenizer(tiny_model_path, tmp_path, isolated_store):
    write_gguf(tiny_model_path, tmp_path / "m.gguf", pre="brand-new-bpe")
    with pytest.raises(LiftError, match="brand-new-bpe") as err:
        import_gguf(tmp_path / "m.gguf")
    assert "\n" not in str(err.value)
    assert_nothing_complete(isolated_store)


# -- the cache ------------------------------------------------------------------------------


def test_second_import_reuses_the_folder(tiny_model_path, tmp_path, isolated_store):
    path = tmp_path / "m.gguf"
    write_gguf(tiny_model_path, path, qtype=QType.Q4_0)
    start = time.perf_counter()
    first = import_gguf(path, quantized=False)
    first_s = time.perf_counter() - start
    stamps = {p: p.stat().st_mtime_ns for p in [first, *first.iterdir()]}
    start = time.perf_counter()
    second = import_gguf(path, quantized=False)
    second_s = time.perf_counter() - start
    print(f"import {first_s * 1000:.0f} ms, cached {second_s * 1000:.0f} ms")
    assert second == first
    assert first.is_relative_to(isolated_store / "models")
    assert {p: p.stat().st_mtime_ns for p in [first, *first.iterdir()]} == stamps
    assert second_s < max(0.5 * first_s, 0.05)
    # Another form of the same file is another model, not the cached one.
    assert import_gguf(path, quantized=True) != first


def test_rewritten_file_is_imported_again(tiny_model_path, tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(tiny_model_path, path, qtype=QType.Q4_0)
    first = import_gguf(path, quantized=False)
    ref = write_gguf(tiny_model_path, path, qtype=QType.Q8_0)
    again = import_gguf(path, quantized=False)
    imported, _ = mlx_lm.load(str(again))
    diff = max_diff(logits(imported), reference_logits(tiny_model_path, ref))
    print(f"max |dlogit| llama Q8_0 after rewriting a Q4_0 file: {diff:.3g}")
    assert again != first and diff < EXACT
