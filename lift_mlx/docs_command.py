"""The `lift-mlx docs` commands: the document library (library.py) on the command line."""

from __future__ import annotations

from pathlib import Path

import click

from . import sources, store
from .errors import LiftError
from .library import (
    Entry,
    absorb_time,
    describe,
    entries,
    export,
    find,
    import_archive,
    remove,
    rename,
)


def _settings_summary(e: Entry) -> str:
    train = e.field("settings", "train", default={})
    if not train:
        return "-"
    epochs = train.get("epochs")
    return (f"rank {train.get('rank')}, {epochs} epoch{'s' if epochs != 1 else ''}, "
            f"{'+'.join(train.get('tasks', []))}")


def _when(e: Entry) -> str:
    return str(e.field("created"))[:16].replace("T", " ")


def _mb(path: Path) -> str:
    return f"{store.dir_size(path) / 1e6:.1f} MB"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def docs_command() -> click.Group:
    """The `lift-mlx docs` command group."""

    @click.group("docs")
    def docs():
        """The document library: what has been absorbed, by name.

        \b
        Each document is named after its file (`lift-mlx docs rename` changes it); the name,
        the key or the first characters of the key (4 or more) identify it in these
        commands, and the name is its model id in `lift-mlx serve`.
        """

    @docs.command("list")
    def list_():
        """List the absorbed documents: name, source, hash, base model, settings, adapter
        size, date and absorb time (over all its runs, when it resumed an interrupted one)."""
        found = entries()
        if not found:
            click.echo("no documents yet; absorb one with `lift-mlx absorb DOC`", err=True)
            return
        rows = [["NAME", "SOURCE", "SHA256", "BASE MODEL", "SETTINGS", "SIZE", "CREATED",
                 "ABSORB"]]
        for e in found:
            if e.problem:
                rows.append([e.key, "-", "-", "-", "-", _mb(e.path), "-", "-"])
                continue
            rows.append([e.name, str(e.field("document", "source")),
                         str(e.field("document", "sha256"))[:12], str(e.field("model", "name")),
                         _settings_summary(e), _mb(e.path), _when(e),
                         absorb_time(e.absorb_seconds, e.absorb_runs)])
        click.echo(_table(rows))
        for e in filter(lambda e: e.problem, found):
            fix = f"; remove it with `lift-mlx docs rm {e.key}`" if e.meta is None else ""
            click.echo(f"cannot use {e.key}: {e.problem}{fix}", err=True)

    @docs.command()
    @click.argument("ident", metavar="ID")
    def show(ident):
        """Show everything about one document and check its files against their checksums."""
        e = find(ident)
        click.echo(f"name         {e.name}")
        click.echo(f"key          {e.key}")
        click.echo(f"path         {e.path} ({_mb(e.path)})")
        if e.meta is None:
            click.echo(f"integrity    damaged: {e.problem}")
            return
        try:
            store.verify(e.path)
            integrity = "ok (checksums match)" if e.meta.get("checksums") else \
                "not checked (written before lift-mlx kept checksums)"
        except LiftError as err:
            integrity = f"cannot be used: {err}"
        for line in describe(e):
            click.echo(line)
        click.echo(f"integrity    {integrity}")

    @docs.command()
    @click.argument("ident", metavar="ID")
    def rm(ident):
        """Remove a document (its adapter and its copy of the text) from the library."""
        e = remove(ident)
        click.echo(f"removed {e.name} ({e.key})")

    @docs.command("rename")
    @click.argument("ident", metavar="ID")
    @click.argument("name")
    def rename_(ident, name):
        """Give a document a new NAME (its model id in `lift-mlx serve`)."""
        e = rename(ident, name)
        click.echo(f"{e.key} is now {name}")

    @docs.command("export")
    @click.argument("ident", metavar="ID")
    @click.argument("file", type=click.Path(path_type=Path))
    def export_(ident, file):
        """Write a document as one archive FILE (adapter, metadata and the document's text;
        no base weights) for `lift-mlx docs import` on another machine."""
        path = export(ident, file)
        click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); it holds the "
                   "document's text")

    @docs.command("import")
    @click.argument("file", type=click.Path(path_type=Path))
    @click.option("--model", "-m", default=None, metavar="M",
                  help=f"The base model here (any --model value: {sources.described()}). "
                       "It must be the base the archive was made for. [default: the base "
                       "named in the archive]")
    @click.option("--name", default=None, help="Name it NAME instead of its exported name.")
    def import_(file, model, name):
        """Add an archive written by `lift-mlx docs export`, after checking its files and that
        its base model is here."""
        e, new = import_archive(file, model, name)
        click.echo(f"imported {e.name} ({e.key})" if new else
                   f"already in the library as {e.name} ({e.key})")

    return docs
