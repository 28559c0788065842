"""The document library: every absorbed document in the store under a readable name, to list,
describe, rename, remove, export and import (the `lift-mlx docs` commands are docs_command.py).

An entry is a store directory (see store.py). Its name lives in its metadata; an entry without
one (just absorbed) is given one from its source's file name the first time the library is
read. An export is a zip archive of the entry's four files (adapter, adapter config, metadata,
document text) and nothing else: no base weights, so the importing machine needs the base, and
no retrieval index, which it builds from the document on first use.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import sources, store
from .config import settings_lines
from .errors import LiftError
from .models import model_fingerprint
from .tasks import TASKS

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
NAME_RULE = "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, " \
            "at most 64"
ARCHIVE_MEMBERS = (store.META_FILE, *store.DATA_FILES)
MAX_IMPORT_BYTES = 4 * 2**30  # far above any adapter plus document; refuses zip bombs
EXPORT_SUFFIX = ".lift.zip"
KEY_PREFIX_MIN = 4  # the shortest start of a key that `find` takes for the key


@dataclass
class Entry:
    """One store entry; `problem` says why it cannot be used (then `meta` may be None)."""

    path: Path
    meta: dict | None
    problem: str | None = None

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return (self.meta or {}).get("name") or self.key

    def field(self, *keys, default="-"):
        value = self.meta or {}
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return default if value is None else value

    @property
    def absorb_seconds(self) -> float:
        """Time the absorb took over all its runs, model loading excluded (an entry made
        before lift-mlx counted runs: its one run's stages)."""
        total = self.field("report", "total_seconds", default=None)
        if isinstance(total, (int, float)):
            return float(total)
        seconds = self.field("report", "seconds", default={})
        return sum(v for k, v in seconds.items() if k != "load" and isinstance(v, (int, float)))

    @property
    def absorb_runs(self) -> int:
        """The absorb runs that trained it (more than one: it resumed interrupted ones)."""
        runs = self.field("report", "runs", default=1)
        return runs if isinstance(runs, int) and runs > 0 else 1


def absorb_time(seconds: float, runs: int) -> str:
    """`1308.0s`, or `3480.2s over 2 runs` for an absorb that resumed an interrupted one."""
    return f"{seconds:.1f}s" + (f" over {runs} runs" if runs > 1 else "")


def _read(path: Path) -> Entry:
    try:
        meta = json.loads((path / store.META_FILE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError):
        return Entry(path, None, f"damaged ({store.META_FILE} is missing or unreadable)")
    try:
        store.check_format(meta, path.name)
    except LiftError as e:
        return Entry(path, meta, str(e))
    return Entry(path, meta)


def entries() -> list[Entry]:
    """Every entry of the store, oldest first, each with a name."""
    found = _all()
    if any(_unnamed(e) for e in found):
        with store.lock("library"):
            found = _all()  # another process may have named them meanwhile
            _name(found)
    return found


def _all() -> list[Entry]:
    return sorted((_read(p) for p in store.entry_dirs()),
                  key=lambda e: (str(e.field("created", default="")),
                                 float(e.field("saved_at", default=0.0)), e.key))


def _unnamed(e: Entry) -> bool:
    return e.meta is not None and not e.problem and "name" not in e.meta


def _name(found: list[Entry]) -> None:
    """Give each unnamed entry a name of its own (the caller holds the library's lock)."""
    taken = {e.name for e in found if not _unnamed(e)}
    for e in filter(_unnamed, found):
        e.meta["name"] = unique_name(default_name(e.meta), taken)
        taken.add(e.meta["name"])
        _write_meta(e.path, e.meta)


def _locked_entries() -> list[Entry]:
    """`entries()` for a caller that holds the library's lock."""
    found = _all()
    _name(found)
    return found


def default_name(meta: dict) -> str:
    """A name from the document's source: `reports/Q3 Plan.pdf` -> `q3-plan`."""
    source = str((meta.get("document") or {}).get("source") or "document")
    return slug(Path(source).stem if source not in ("stdin", "-") else "stdin")


def slug(text: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:48].strip("-._")
    return name or "document"


def unique_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def find(ident: str, among: list[Entry] | None = None) -> Entry:
    """The entry named `ident`, or whose key is `ident` or starts with it (4 characters or
    more); a LiftError that lists the names otherwise."""
    among = entries() if among is None else among
    for match in ([e for e in among if e.name == ident], [e for e in among if e.key == ident],
                  [e for e in among if len(ident) >= KEY_PREFIX_MIN and e.key.startswith(ident)]):
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            raise LiftError(f"{ident!r} matches {len(match)} documents "
                            f"({', '.join(e.key for e in match)}); give more of the key")
    names = ", ".join(e.name for e in among) or "none yet; absorb one with `lift-mlx absorb`"
    raise LiftError(f"no document {ident!r} in the library (documents: {names}); "
                    "see `lift-mlx docs list`")


def _write_meta(path: Path, meta: dict) -> None:
    store.write_atomic(path / store.META_FILE, json.dumps(meta, indent=2))


def name_problem(name: str, among: list[Entry]) -> str | None:
    """Why `name` cannot name an entry of `among` (None if it can): it breaks the rule, or
    `find` would take it for a key (one like a store key, or the start of an entry's key)."""
    if not NAME_PATTERN.fullmatch(name) or store.KEY_PATTERN.fullmatch(name):
        return f"{name!r} is not a usable name: use {NAME_RULE} characters " \
               "(and not a 20-character key)"
    clash = [e for e in among if len(name) >= KEY_PREFIX_MIN and e.key.startswith(name)]
    if clash:
        return f"{name!r} is the start of the key of {clash[0].name!r} ({clash[0].key}); " \
               "choose another name"
    return None


def check_name(name: str, among: list[Entry], keep: Entry | None = None) -> None:
    if problem := name_problem(name, among):
        raise LiftError(problem)
    if any(e.name == name and e is not keep for e in among):
        raise LiftError(f"the name {name!r} is taken; choose another or rename that one first")


def rename(ident: str, name: str) -> Entry:
    with store.lock("library"):
        among = _locked_entries()
        entry = find(ident, among)
        if entry.problem:
            raise LiftError(f"{entry.key} cannot be renamed: {entry.problem}")
        check_name(name, among, keep=entry)
        entry.meta["name"] = name
        _write_meta(entry.path, entry.meta)
    return entry


def remove(ident: str) -> Entry:
    """Delete an entry (a damaged one too): moved aside at once, then deleted."""
    entry = find(ident)
    with store.lock(entry.key):
        aside = entry.path.with_name(f".{entry.key}.old-removed")
        shutil.rmtree(aside, ignore_errors=True)
        entry.path.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    return entry


def export(ident: str, file: Path) -> Path:
    """Write an entry as one portable archive at `file` (or into it, if it is a folder)."""
    entry = find(ident)
    meta = dict(store.verify(entry.path))  # a damaged entry is never exported
    # Entries from before checksums get them; the index stays behind (derived from the
    # document, the importing lift-mlx builds it on first use).
    meta["checksums"] = {n: d for n, d in store.checksums(entry.path).items()
                         if n in store.DATA_FILES}
    file = Path(file)
    if file.is_dir():
        file = file / f"{entry.name}{EXPORT_SUFFIX}"
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f, zipfile.ZipFile(f, "w") as z:
            z.writestr(store.META_FILE, json.dumps(meta, indent=2), zipfile.ZIP_DEFLATED)
            for name in store.DATA_FILES:  # the weights hardly compress: stored as they are
                kind = zipfile.ZIP_STORED if name == store.ADAPTER_FILE else zipfile.ZIP_DEFLATED
                z.write(entry.path / name, name, kind)
        Path(tmp).replace(file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def import_archive(file: Path, model: str | None = None,
                   name: str | None = None) -> tuple[Entry, bool]:
    """Add an exported entry to the library after checking it is whole and that its base
    model is here (`model`, else the base named in it); (the entry, whether it was new)."""
    file = Path(file)
    meta, z = _open_archive(file)
    with z:
        made_for = meta["model"]
        base = model or str(made_for.get("name"))
        try:
            base_path = sources.resolve_model(base)
        except LiftError as e:
            raise LiftError(f"{file.name} was made for base model {made_for.get('name')!r}, "
                            f"which is not available here ({e}); pass --model with that base"
                            ) from None
        fingerprint = model_fingerprint(base_path)
        if fingerprint != made_for.get("fingerprint"):
            raise LiftError(
                f"{file.name} was made for base model {made_for.get('name')!r} (fingerprint "
                f"{made_for.get('fingerprint')}), not {base!r} ({fingerprint}); pass --model "
                "with the base it was made for")
        key = meta["key"]
        with store.lock(key):
            dest = store.adapters_dir() / key
            if dest.exists():
                try:
                    store.verify(dest)
                    return find(key), False
                except LiftError:
                    pass  # a damaged copy: replaced below
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{key}.", suffix=".partial"))
            try:
                for member in store.DATA_FILES:
                    with z.open(member) as src, open(tmp / member, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 22)
                if store.checksums(tmp) != {n: meta["checksums"].get(n)
                                            for n in store.DATA_FILES}:
                    raise LiftError(f"{file} is damaged (its files do not match their "
                                    "checksums); export the document again")
                meta["checksums"] = {n: meta["checksums"][n] for n in store.DATA_FILES}
                meta["imported"] = {"from": file.name, "model": made_for,
                                    "on": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                meta["model"] = {"name": base, "path": str(base_path),
                                 "fingerprint": fingerprint}
                with store.lock("library"):
                    among = _locked_entries()
                    if name is not None:
                        check_name(name, among)
                    wanted = name or meta.get("name")
                    if not (isinstance(wanted, str) and NAME_PATTERN.fullmatch(wanted)):
                        wanted = default_name(meta)
                    meta["name"] = unique_name(wanted, {e.name for e in among})
                    _write_meta(tmp, meta)
                    store.replace_dir(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return find(key), True


def _open_archive(file: Path) -> tuple[dict, zipfile.ZipFile]:
    """The metadata and the open archive of an export, or a LiftError saying what is wrong."""
    what = f"{file} is not a lift-mlx export"
    if not file.is_file():
        raise LiftError(f"No such file: {file}. Give an archive written by `lift-mlx docs export`.")
    try:
        z = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError):
        raise LiftError(f"{what} (not a zip archive); make one with `lift-mlx docs export`"
                        ) from None
    try:
        infos = z.infolist()
        if sorted(i.filename for i in infos) != sorted(ARCHIVE_MEMBERS):
            raise LiftError(f"{what} (it should hold exactly {', '.join(ARCHIVE_MEMBERS)})")
        if sum(i.file_size for i in infos) > MAX_IMPORT_BYTES:
            raise LiftError(f"{what} (its files add up to more than "
                            f"{MAX_IMPORT_BYTES // 2**30} GiB)")
        try:
            meta = json.loads(z.read(store.META_FILE).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile):
            raise LiftError(f"{file} is damaged ({store.META_FILE} is unreadable); export the "
                            "document again") from None
        if not (isinstance(meta, dict) and isinstance(meta.get("model"), dict)
                and isinstance(meta.get("checksums"), dict)):
            raise LiftError(f"{what} (its {store.META_FILE} lacks the model or checksums)")
        store.check_format(meta, str(file))
        if not store.KEY_PATTERN.fullmatch(str(meta.get("key", ""))):
            raise LiftError(f"{what} (its key {meta.get('key')!r} is not a lift-mlx key)")
    except BaseException:
        z.close()
        raise
    return meta, z


def describe(e: Entry) -> list[str]:
    """What an entry (or any adapter folder) holds, a line per subject: the document, the base
    model, how and when it was made, the settings (with where each came from), the samples
    of each task, the training and its cost (`lift-mlx info` and `docs show`)."""
    doc = e.field("document", default={})
    gen = e.field("generator")
    lines = [
        f"document     {doc.get('source')} ({doc.get('tokens', 0):,} tokens, "
        f"{doc.get('chars', 0):,} characters)",
        f"sha256       {doc.get('sha256')}",
        f"base model   {e.field('model', 'name')} (fingerprint {e.field('model', 'fingerprint')})",
        f"generator    {gen.get('name') if isinstance(gen, dict) else gen}",
        f"created      {e.field('created')} with lift-mlx {e.field('lift_mlx_version')}, "
        f"absorbed in {absorb_time(e.absorb_seconds, e.absorb_runs)}",
    ]
    if imported := (e.meta or {}).get("imported"):
        lines.append(f"imported     from {imported.get('from')} on {imported.get('on')}")
    lines += settings_lines(e.field("settings", default={}),
                            e.field("settings_from", default={}))
    report = e.field("report", default={})
    counts = {k.removesuffix("_samples"): v for k, v in report.items() if k.endswith("_samples")}
    order = [*(t for t in TASKS if t in counts), *sorted(set(counts) - set(TASKS))]
    train = report.get("train", {})
    loss = train.get("final_loss")
    lines += [
        "samples      " + ", ".join(f"{counts[t]} {t}" for t in order),
        f"training     {train.get('steps', 0)} steps, {train.get('tokens', 0):,} tokens, "
        f"final loss {float('nan') if loss is None else loss:.3f}",
        "time         " + ", ".join(f"{k} {v:.1f}s" for k, v in report.get("seconds", {}).items())
        + (f" (the last of {e.absorb_runs} runs)" if e.absorb_runs > 1 else ""),
        f"peak memory  {report.get('peak_memory_gb', 0):.2f} GB",
    ]
    return lines
