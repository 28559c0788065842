"""A GGUF file's tokenizer rebuilt with the `tokenizers` library from the file's metadata:
its vocabulary, merges (or SentencePiece scores), token types, special tokens, bos/eos/pad,
add-bos flag and chat template, as a transformers fast tokenizer that `save_pretrained` writes
into the imported model folder.
"""

from __future__ import annotations

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast

from .errors import LiftError

# Byte-level BPE pre-tokenizers, by llama.cpp's `tokenizer.ggml.pre` name.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_PRE_TOKENIZERS = {
    "default": "gpt2", "gpt-2": "gpt2", "gpt2": "gpt2",
    "smollm": "digits+gpt2", "starcoder": "digits+gpt2", "refact": "digits+gpt2",
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
}
_CONTROL, _USER_DEFINED, _UNKNOWN, _BYTE = 3, 4, 2, 6  # llama.cpp token types


def metadata(reader, key: str, default=None):
    """The value of GGUF metadata field `key` (a str, number, bool or list), or `default`."""
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value.item() if hasattr(value, "item") else value


def build_tokenizer(reader):
    """The GGUF's tokenizer rebuilt with `tokenizers`, as a transformers fast tokenizer."""
    kind = metadata(reader, "tokenizer.ggml.model")
    tokens = list(metadata(reader, "tokenizer.ggml.tokens") or [])
    if not tokens:
        raise LiftError("the GGUF file holds no tokenizer (no tokenizer.ggml.tokens)")
    types = list(metadata(reader, "tokenizer.ggml.token_type") or [1] * len(tokens))
    vocab = {tok: i for i, tok in enumerate(tokens)}

    def token(key):
        i = metadata(reader, f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None and int(i) < len(tokens) else None

    if kind == "gpt2":
        pre = metadata(reader, "tokenizer.ggml.pre", "default")
        split = _PRE_TOKENIZERS.get(pre)
        if split is None:
            raise LiftError(f"GGUF tokenizer pre-processing {pre!r} is not supported")
        merges = [tuple(m.split(" ", 1)) for m in metadata(reader, "tokenizer.ggml.merges") or []]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=split ==
                                   _LLAMA3_SPLIT))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        if split == "gpt2":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        elif split == "digits+gpt2":
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False)])
        else:
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])
        tok.decoder = decoders.ByteLevel()
    elif kind == "llama":
        scores = list(metadata(reader, "tokenizer.ggml.scores") or [0.0] * len(tokens))
        unk = token("unknown") or "<unk>"
        tok = Tokenizer(models.BPE(vocab=vocab, merges=_spm_merges(tokens, scores, types),
                                   unk_token=unk, fuse_unk=True, byte_fallback=True))
        if metadata(reader, "tokenizer.ggml.add_space_prefix", True):
            tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                                   normalizers.Replace(" ", "\u2581")])
            strip = [decoders.Strip(" ", 1, 0)]
        else:
            tok.normalizer = normalizers.Replace(" ", "\u2581")
            strip = []
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), *strip])
    else:
        raise LiftError(f"GGUF tokenizer model {kind!r} is not supported (lift-mlx reads gpt2 "
                        "byte-level BPE and llama SentencePiece vocabularies)")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind_ in zip(tokens, types) if kind_ == _CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False)
                    for t, kind_ in zip(tokens, types) if kind_ == _USER_DEFINED])
    bos = token("bos")
    if metadata(reader, "tokenizer.ggml.add_bos_token", False) and bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=token("eos"),
        pad_token=token("padding"), unk_token=token("unknown"),
        chat_template=metadata(reader, "tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )


def _spm_merges(tokens: list[str], scores: list[float], types: list[int]):
    """BPE merges for a SentencePiece vocabulary, which GGUF stores as pieces with scores:
    every split of a piece into two pieces is a merge, ranked by the merged piece's score."""
    vocab = {t: i for i, (t, kind) in enumerate(zip(tokens, types)) if kind not in (_CONTROL,
                                                                                    _BYTE)}
    ranked = []
    for piece, i in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[i], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]
