"""Where adapters live: mlx-lm's adapter format plus lift-mlx's metadata, written atomically.

An adapter directory holds `adapters.safetensors` and `adapter_config.json` (so
`mlx_lm.load(model, adapter_path=DIR)` and `mlx_lm.generate --adapter-path DIR` work on it),
`lift_meta.json` (document hash, base model, settings, counts, timings), `document.txt` (the
absorbed text, for answer-time context) and `index/`, the document's passages indexed for
retrieval (retrieval/stored.py; an entry without one builds it on first use). A directory only
gets its final name once every file is written, so an interrupted absorb leaves nothing that
looks complete. The metadata holds the sha256 of the other files, checked before an entry is
used (`verify`), and the store format it was written in. `lock` keeps two processes from
absorbing one document at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import LiftError

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
META_FILE = "lift_meta.json"
DOCUMENT_FILE = "document.txt"
DATA_FILES = (ADAPTER_FILE, CONFIG_FILE, DOCUMENT_FILE)  # the files the checksums cover
INDEX_DIR = "index"  # its files are checksummed too, but derived: an entry may lack them
FORMAT_VERSION = 1  # the store's layout; entries of a newer format are refused, not guessed at
KEY_PATTERN = re.compile(r"[0-9a-f]{20}")  # what adapter_key makes
# A write the machine refused (read-only, not permitted, disk or quota full): the user's to fix.
FULL = {errno.ENOSPC, errno.EDQUOT}
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, *FULL}
# MLX reports a failed safetensors write as a RuntimeError without an errno, tagged thus.
_MLX_WRITE_ERRORS = ("[write] ", "[save_safetensors] ")


def home() -> Path:
    """The store's root: $LIFT_MLX_HOME, else ~/.cache/lift-mlx (or $XDG_CACHE_HOME/lift-mlx)."""
    if env := os.environ.get("LIFT_MLX_HOME"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lift-mlx"


def unwritable(path: Path, reason: str, full: bool) -> LiftError:
    """The one-line error for a write refused at `path` (`full`: for want of space), with the
    fix: under the store, its folder named and LIFT_MLX_HOME."""
    path, root = Path(path), home()
    fix = "free space on its disk" if full else "make it writable"
    if path == root or root in path.parents:
        fix = (f"free space on the disk of {root}" if full else f"make {root} writable") + (
            ", or set LIFT_MLX_HOME to a folder " + ("on another disk" if full else "that is"))
    return LiftError(f"cannot write to {path}: {reason}; {fix}")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes under `path` whose failure (a full disk, a read-only folder) is a LiftError
    naming it, not a traceback; MLX's failed writes included."""
    try:
        yield
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        raise unwritable(Path(e.filename or path), e.strerror, e.errno in FULL) from None
    except RuntimeError as e:
        message = str(e)
        if not message.startswith(_MLX_WRITE_ERRORS):
            raise
        reason = message.split("] ", 1)[1].rstrip(".")
        raise unwritable(path, reason, full=message.startswith("[write] ")) from None


def adapters_dir() -> Path:
    return home() / "adapters"


def locks_dir() -> Path:
    return home() / "locks"


def models_dir() -> Path:
    """Where models lift-mlx makes live: GGUF imports, downloaded files, the hash index."""
    return home() / "models"


def checkpoints_dir() -> Path:
    """Where an absorb keeps its training checkpoints until its adapter is stored."""
    return home() / "checkpoints"


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
    out: Path, write: Callable[[Path], None], meta: dict, document_text: str
) -> Path:
    """Write a complete adapter directory at `out`, replacing any adapter already there;
    `write(folder)` writes the adapter's own files (ADAPTER_FILE, CONFIG_FILE: its kind's
    `save`) and the document's index (INDEX_DIR).

    Adds the store format and the files' checksums to `meta` (the caller's dict, so a later
    rewrite of the metadata keeps them) and keeps the library name of the entry it replaces.
    """
    out = Path(out)
    if out.exists() and not _replaceable(out):
        raise LiftError(f"{out} exists and is not an adapter directory; choose another --out")
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        with writing(out.parent):
            write(tmp)
            (tmp / DOCUMENT_FILE).write_text(document_text, encoding="utf-8")
            meta["format"] = FORMAT_VERSION
            meta["checksums"] = checksums(tmp)
            meta["saved_at"] = time.time()  # orders entries made within one second
            if "name" not in meta and (old_name := _old_name(out)):
                meta["name"] = old_name
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))  # last: marks completeness
            replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replaceable(path: Path) -> bool:
    """An adapter directory, an empty one, or any entry of the store (a damaged one too)."""
    in_store = path.parent.resolve() == adapters_dir().resolve()
    return is_adapter_dir(path) or in_store or not any(path.iterdir())


def _old_name(path: Path) -> str | None:
    return (_meta_or_none(path) or {}).get("name")


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the complete directory `tmp` to `out` (same filesystem), replacing `out`."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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


def checksums(path: Path) -> dict[str, str]:
    """The sha256 of each data file of an adapter directory, and of its index's files."""
    return {name: file_sha256(Path(path) / name) for name in (*DATA_FILES, *index_files(path))}


def index_files(path: Path) -> list[str]:
    """The files of the entry's index, as its checksums name them ("index/index.json")."""
    folder = Path(path) / INDEX_DIR
    if not folder.is_dir():
        return []
    return sorted(f.relative_to(path).as_posix() for f in folder.rglob("*") if f.is_file())


def _checked(name: str) -> bool:
    """Whether the checksum of `name` is checked: a data file's or an index file's (a name
    that leaves the entry is ignored, as are names a newer lift-mlx may add)."""
    parts = name.split("/")
    return name in DATA_FILES or (len(parts) > 1 and parts[0] == INDEX_DIR
                                  and not {"", ".", ".."} & set(parts))


def _check_sums(path: Path, sums: dict) -> None:
    """Refuse the entry at `path` where a file its checksums name is missing or differs."""
    for name, digest in sums.items():
        if not _checked(name):
            continue
        if not (path / name).is_file():
            raise damaged(path, f"{name} missing")
        if file_sha256(path / name) != digest:
            raise damaged(path, f"{name} does not match its checksum")


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


class Damaged(LiftError):
    """An entry that must not be loaded; `reason` says what is wrong with it."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def damaged(path: Path, reason: str) -> Damaged:
    """The error for an entry that must not be loaded, saying what to do about it."""
    path = Path(path)
    if path.parent.resolve() == adapters_dir().resolve():
        return Damaged(f"the stored document {path.name} is damaged ({reason}); remove it with "
                       f"`lift-mlx docs rm {path.name}` and absorb the document again", reason)
    return Damaged(f"the adapter {path} is damaged ({reason}); delete it and absorb the "
                   "document again", reason)


def check_format(meta: dict, where: str) -> None:
    """Refuse metadata of a store format this lift-mlx does not know (a newer lift-mlx)."""
    found = meta.get("format", FORMAT_VERSION)  # entries from before checksums have none
    if not isinstance(found, int) or found > FORMAT_VERSION:
        by = meta.get("lift_mlx_version", "another version")
        raise LiftError(
            f"{where} was written by lift-mlx {by} in store format {found}; this is lift-mlx "
            f"{__version__}, which reads format {FORMAT_VERSION}: upgrade lift-mlx "
            "(pip install -U lift-mlx) or absorb the document again with this one"
        )


_REQUIRED = {"key": str, "document": dict, "model": dict, "settings": dict}


def verify(path: Path) -> dict:
    """The metadata of an adapter directory after checking that it is whole: readable
    metadata of a known format, every file present and matching its checksum."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        return read_meta(path)  # says why this is not an adapter directory at all
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise damaged(path, f"{META_FILE} is unreadable") from None
    bad = [k for k, kind in _REQUIRED.items()
           if not isinstance(meta, dict) or not isinstance(meta.get(k), kind)]
    if bad:
        raise damaged(path, f"{META_FILE} lacks {', '.join(bad)}")
    check_format(meta, str(path))
    missing = [name for name in DATA_FILES if not (path / name).is_file()]
    if missing:
        raise damaged(path, f"{', '.join(missing)} missing")
    sums = meta.get("checksums")
    # Only entries from before the store had a format (and checksums) load unchecked.
    if "format" in meta and not (isinstance(sums, dict) and set(DATA_FILES) <= set(sums)):
        raise damaged(path, f"{META_FILE} lacks the checksums of its files")
    _check_sums(path, sums or {})
    return meta


def checked_index(path: Path) -> bool:
    """Whether the entry at `path` holds an index that its metadata vouches for: each file
    under INDEX_DIR named in its checksums, and matching (Damaged where one named is missing
    or differs). False where there is none, or files not named (a write cut short)."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise damaged(path, f"{META_FILE} is unreadable") from None
    sums = meta.get("checksums") if isinstance(meta, dict) else None
    named = {n: d for n, d in (sums if isinstance(sums, dict) else {}).items()
             if _checked(n) and n not in DATA_FILES}
    _check_sums(path, named)
    return bool(named) and set(named) == set(index_files(path))


def add_index(path: Path, write: Callable[[Path], None]) -> bool:
    """Write the index of the entry at `path` (`write(folder)` fills the new folder) in place
    of any there, with its checksums in the metadata; False, nothing changed, where another
    process holds the entry or the library, the entry is read-only or is from before
    checksums."""
    path = Path(path)
    key = (_meta_or_none(path) or {}).get("key")
    if not isinstance(key, str):
        return False
    try:
        with lock(key, timeout=0), lock("library", timeout=0):  # renames rewrite the metadata
            meta = _meta_or_none(path)
            if meta is None or not isinstance(meta.get("checksums"), dict):
                return False
            tmp = Path(tempfile.mkdtemp(dir=path, prefix=f".{INDEX_DIR}.", suffix=".partial"))
            try:
                write(tmp)
                replace_dir(tmp, path / INDEX_DIR)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            # The metadata after the files: a write cut short leaves files it does not name,
            # which are not trusted but built again.
            sums = {n: d for n, d in meta["checksums"].items()
                    if n.split("/")[0] != INDEX_DIR}
            meta["checksums"] = {**sums, **{n: file_sha256(path / n) for n in index_files(path)}}
            write_atomic(path / META_FILE, json.dumps(meta, indent=2))
    except OSError:  # read-only, or full
        return False
    except LiftError:  # another process holds the entry or the library
        return False
    return True


def _meta_or_none(path: Path) -> dict | None:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def entry_dirs() -> list[Path]:
    """Every entry of the store, damaged ones included (not the hidden work directories)."""
    root = adapters_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@contextmanager
def lock(name: str, *, timeout: float | None = None,
         on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the store's lock `name` (an adapter key: one absorb of a document at a time, across
    processes and threads). A second holder waits; `on_wait` hears who holds it first.

    The lock is an flock(2) on a file under locks/, which the system drops when its holder
    exits, however it exits: a killed absorb leaves a file but never a stale lock.
    """
    locks_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(locks_dir() / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_flock(fd):
            if on_wait is not None:
                on_wait(os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown")
            deadline = None if timeout is None else time.monotonic() + timeout
            while not _try_flock(fd):  # polling keeps Ctrl-C and the timeout responsive
                if deadline is not None and time.monotonic() >= deadline:
                    raise LiftError(f"another lift-mlx is still working on {name}; "
                                    "try again when it is done")
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _try_flock(fd: int) -> bool:
    import fcntl  # POSIX only: imported where a lock is taken, not on import

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without flock (some network mounts): work unlocked
        pass
    return True


def clean_partials() -> list[Path]:
    """Remove the work directories that absorbs killed while saving left behind (an absorb
    still writing holds its key's lock, so its directory is kept)."""
    root, removed = adapters_dir(), []
    if not root.is_dir():
        return removed
    for tmp in root.glob(".*"):
        key = tmp.name[1:].split(".")[0]
        if not (tmp.is_dir() and (".partial" in tmp.name or ".old-" in tmp.name)):
            continue
        try:
            with lock(key, timeout=0):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        except LiftError:
            continue  # being written right now
    return removed
