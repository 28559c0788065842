"""Progress bars on a terminal (stage, done/total, rate, ETA); silent otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import click


class Progress:
    """Draws bars on stderr when it is a terminal and `quiet` is off; logs lines when verbose."""

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bars = not quiet and self.stream.isatty()

    def log(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, file=self.stream)

    def warn(self, message: str) -> None:
        click.echo(click.style(f"warning: {message}", fg="yellow"), file=self.stream)

    @contextmanager
    def bar(self, label: str, total: int, unit: str = "tok"):
        """Yields `update(done, units_so_far, note="", total=None)` for a stage of `total`
        steps; `total` there replaces the one given (an estimate that became exact). `done`
        and `units` count this stage's work since the bar began: its rate and ETA are theirs."""
        if not self.bars:
            yield lambda done, units=0, note="", total=None: None
            return
        start = time.perf_counter()
        with click.progressbar(length=total, label=label, file=self.stream, show_eta=True,
                               show_pos=True, item_show_func=lambda s: s) as bar:
            state = {"done": 0}

            def update(done: int, units: int = 0, note: str = "", total: int | None = None
                       ) -> None:
                if total is not None:
                    bar.length = total
                    bar.finished = False  # click sets it once pos reaches the old length
                rate = units / max(time.perf_counter() - start, 1e-9)
                info = f"{rate:,.0f} {unit}/s" + (f"  {note}" if note else "")
                bar.update(done - state["done"], current_item=info)
                state["done"] = done

            yield update


def timed(times: dict[str, float], stage: str) -> Callable:
    """Context manager adding the elapsed seconds of a block to `times[stage]`."""

    @contextmanager
    def block():
        start = time.perf_counter()
        try:
            yield
        finally:
            times[stage] = times.get(stage, 0.0) + time.perf_counter() - start

    return block()
