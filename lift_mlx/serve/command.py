"""The `lift-mlx serve` command: load the model, start the server, serve until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys

import click

from .. import backend
from ..absorb import raise_interrupt
from ..errors import LiftError
from ..models import load_model
from ..options import model_option
from .http import LiftServer
from .requests import DEFAULT_DOCUMENT_MB


def serve_command() -> click.Command:
    """The `lift-mlx serve` command (cli.py builds it only when it runs)."""

    @click.command("serve")
    @model_option
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to listen on. Anything but a loopback address lets other "
                       "machines read your documents through the server.")
    @click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
                  help="Port to listen on; 0 picks a free one.")
    @click.option("--adapters-in-memory", "kept", type=click.IntRange(1, 64), default=4,
                  show_default=True, help="Document adapters kept loaded for quick swaps.")
    @click.option("--max-document-mb", type=click.FloatRange(min=0, min_open=True),
                  default=DEFAULT_DOCUMENT_MB, show_default=True,
                  help="Largest document POST /v1/documents accepts.")
    @click.option("--api-key", envvar="LIFT_MLX_API_KEY", default=None, metavar="KEY",
                  help="Require 'Authorization: Bearer KEY' on every request. "
                       "[default: $LIFT_MLX_API_KEY, else none]")
    @click.option("--allow-host", "allowed_hosts", multiple=True, metavar="NAME",
                  help="Also answer requests whose Host is NAME (a name of this machine in "
                       "/etc/hosts, say); on a loopback address only localhost and loopback "
                       "addresses are answered otherwise. Repeatable.")
    @click.option("--quiet", "-q", is_flag=True, help="No log line per request.")
    def serve(model, host, port, kept, max_document_mb, api_key, allowed_hosts, quiet):
        """Serve the base model and every absorbed document as models of a local
        OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/documents, /health).

        \b
        Point any OpenAI client at http://127.0.0.1:8080/v1 and use a document's name
        (`lift-mlx docs list`) as the model: it answers as `lift-mlx ask` does. Add
        "context": false to a request to answer with the adapter alone.
        """
        backend.use_recommended_wired_limit()
        backend.warn_if_slow_blas()
        lm = load_model(model)
        try:
            server = LiftServer(lm, host, port, kept=kept, quiet=quiet,
                                max_document_bytes=int(max_document_mb * 2**20),
                                api_key=api_key, allowed_hosts=allowed_hosts)
        except OSError as e:
            raise LiftError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick "
                            "another --port or --host") from None
        names = [e.name for e in server.documents()]
        click.echo(f"lift-mlx serve: {server.base_id} and {len(names)} document"
                   f"{'s' if len(names) != 1 else ''}{': ' if names else ''}"
                   f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}", err=True)
        click.echo(f"OpenAI-compatible API at {server.url} (Ctrl-C stops)", err=True)
        if not server.loopback:
            click.secho(f"WARNING: listening on {host}, reachable from other machines: anyone "
                        f"who can reach port {server.server_address[1]} can read your absorbed "
                        "documents, absorb and delete them"
                        + ("" if api_key else ", with no --api-key to stop them")
                        + ". Use --host 127.0.0.1 unless you mean it.",
                        err=True, fg="red", bold=True)
        signal.signal(signal.SIGTERM, raise_interrupt)  # stop as Ctrl-C does
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("stopping: absorb jobs under way are cancelled (nothing partial is "
                       "kept)", err=True)
        finally:
            server.close()
        # Everything is stored and the model is locked: leave without the interpreter's
        # teardown, which was seen to abort the process (SIGABRT) in 5 of 7 test runs after an
        # absorb job had run; the suspect, not proven, is MLX state of the worker threads.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    return serve
