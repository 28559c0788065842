"""Where adapters live: mlx-lm's adapter format plus lift-mlx's metadata, written atomically.

An adapter directory holds `adapters.safetensors` and `adapter_config.json` (so
`mlx_lm.load(model, adapter_path=DIR)` and `mlx_lm.generate --adapter-path DIR` work on it),
`lift_meta.json` (document hash, base model, settings, counts, timings) and `document.txt`
(the absorbed text, for answer-time context). A directory only gets its final name once every
file is written, so an interrupted absorb leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LiftError

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
META_FILE = "lift_meta.json"
DOCUMENT_FILE = "document.txt"
FORMAT_VERSION = 1


def home() -> Path:
    """The store's root: $LIFT_MLX_HOME, else ~/.cache/lift-mlx (or $XDG_CACHE_HOME/lift-mlx)."""
    if env := os.environ.get("LIFT_MLX_HOME"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lift-mlx"


def adapters_dir() -> Path:
    return home() / "adapters"


def qa_cache_path(key: str) -> Path:
    return home() / "qa-cache" / f"{key}.json"


def adapter_key(doc_sha: str, model_fingerprint: str, settings: dict) -> str:
    """The store key of an adapter: the same document, base model and settings give one key."""
    blob = json.dumps([doc_sha, model_fingerprint, settings, FORMAT_VERSION], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_adapter_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in (ADAPTER_FILE, CONFIG_FILE, META_FILE))


def save_adapter(
    out: Path, weights: dict, adapter_config: dict, meta: dict, document_text: str
) -> Path:
    """Write a complete adapter directory at `out`, replacing any adapter already there."""
    import mlx.core as mx

    out = Path(out)
    if out.exists() and not is_adapter_dir(out) and any(out.iterdir()):
        raise LiftError(f"{out} exists and is not an adapter directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        mx.save_safetensors(str(tmp / ADAPTER_FILE), weights)
        (tmp / CONFIG_FILE).write_text(json.dumps(adapter_config, indent=2))
        (tmp / DOCUMENT_FILE).write_text(document_text, encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))  # last: marks completeness
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(path: Path) -> dict:
    """The metadata of an adapter directory, or a LiftError saying why it is not one."""
    path = Path(path)
    if not path.exists():
        raise LiftError(f"no such adapter directory: {path}")
    if not is_adapter_dir(path):
        missing = [n for n in (ADAPTER_FILE, CONFIG_FILE, META_FILE) if not (path / n).is_file()]
        raise LiftError(
            f"{path} is not a lift-mlx adapter (missing {', '.join(missing)}); "
            "pass a document or a directory written by `lift-mlx absorb`"
        )
    try:
        return json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError:
        raise LiftError(f"{path / META_FILE} is corrupt; absorb the document again") from None


def list_adapters() -> list[Path]:
    root = adapters_dir()
    return sorted(p for p in root.iterdir() if is_adapter_dir(p)) if root.is_dir() else []


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
