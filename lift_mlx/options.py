"""The click options that commands share: --model, and the absorb settings, built from their
declarations in config.py (one option per field with a flag)."""

from __future__ import annotations

from collections.abc import Callable

import click

from . import sources
from .config import (
    PRESETS,
    SETTINGS,
    AnswerSettings,
    Setting,
    declared,
    preset,
    setting_sources,
    settings_lines,
)
from .presets import default_model, recommended_settings

ANSWER_SETTINGS = declared(AnswerSettings, "answer")


def model_option(f):
    return click.option(
        "--model", "-m", default=None, metavar="M",
        help=f"Base model: {sources.described()}. Default: $LIFT_MLX_MODEL or qwen-1.5b "
             "(mlx-community/Qwen2.5-1.5B-Instruct-4bit).",
    )(f)


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and 0 < abs(value) < 1e-3:  # 2e-4, not 0.0002
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(s: Setting) -> str:
    default = s.shown or _shown(s.default)
    paper = f"; paper: {_shown(s.paper)}" if s.paper is not None else ""
    return f"{s.help} [default: {default}{paper}]"


def _checker(s: Setting) -> Callable:
    """A click callback that refuses what the declaration does not allow, in its words."""

    def check(ctx, param, value):
        if isinstance(value, str) and s.type == tuple[str, ...]:
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        problem = s.problem(value)
        if problem:
            raise click.BadParameter(problem)
        return value

    return check


def dest(s: Setting) -> str:
    """The click parameter name of a setting's option: stage-qualified, so that neither a
    field of another stage nor a command's own option (ask's --max-tokens) can take it."""
    return f"{s.stage}_{s.field}"


def setting_option(s: Setting) -> Callable:
    """The click option of one declared setting."""
    kwargs = dict(default=None, help=_help(s))
    if s.type in (bool, bool | None):
        return click.option(f"{s.flag}/--no-{s.flag[2:]}", dest(s), **kwargs)
    if s.type == tuple[str, ...]:
        kind = click.STRING
        kwargs["metavar"] = "LIST"
    elif isinstance(s.choices, tuple):
        kind = click.Choice(s.choices)
    elif s.choices is not None:  # a registry: checked when given, so later entries pass too
        kind = click.STRING
        kwargs["metavar"] = f"[{'|'.join(s.choices)}]"
    else:
        kind = {int: click.INT, float: click.FLOAT}.get(s.type, click.STRING)
    return click.option(s.flag, dest(s), type=kind, callback=_checker(s), **kwargs)


SETTING_OPTIONS = {s.flag: s for s in SETTINGS.values() if s.flag}  # flag -> declaration


def setting_options(f):
    """The options of every command that absorbs: the preset, each declared setting with a
    flag, the generator model and how absorbing runs."""
    options = [
        click.option("--preset", "preset_name", type=click.Choice(list(PRESETS)),
                     default="default", show_default=True,
                     help="Named settings: default (16 GB Mac, 0.5-3B model), fast (the "
                          "paper's quick setting: 1 QA/sentence, 1 epoch at 3e-4), paper "
                          "(rank 128, 5 epochs, 10 QA/sentence, 2048/768 segments). Options "
                          "below override it."),
        *[setting_option(s) for s in SETTING_OPTIONS.values() if s.stage == "split"],
        click.option("--generator", default=None, metavar="M",
                     help="Model that writes the QA tasks (any --model value). [default: "
                          "the base model]"),
        *[setting_option(s) for s in SETTING_OPTIONS.values() if s.stage != "split"],
        click.option("--pipeline/--sequential", default=True,
                     help="Start training at once and add QA tasks as they are written, or "
                          "write all of them first (for comparison). [default: pipeline]"),
        click.option("--force", is_flag=True,
                     help="Absorb again even if a stored adapter matches."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries."),
        click.option("--show-settings", is_flag=True,
                     help="Print the settings this command would absorb with, each marked by "
                          "where it came from (a model alias such as smollm2 carries its own "
                          "settings, then --preset, then these options), and stop."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def pop_settings(params: dict, model: str | None = None) -> dict:
    """Take the setting options out of a command's parameters, as flat overrides for
    `config.preset` ({name: value}, None where not given). With --show-settings, print the
    settings they make with `model`'s own (a line per stage) and stop the command."""
    overrides = {s.name: params.pop(dest(s)) for s in SETTING_OPTIONS.values()}
    if params.pop("show_settings", False):
        recommended = recommended_settings(model or default_model())
        name = params["preset_name"]
        settings = preset(name, recommended, **overrides)
        sources = setting_sources(name, recommended, **overrides)
        click.echo("\n".join(settings_lines(settings.to_dict(), sources)))
        click.get_current_context().exit(0)
    return overrides


def answer_options(f):
    """The options of every command that answers: one per `AnswerSettings` field."""
    for s in reversed(ANSWER_SETTINGS):
        f = setting_option(s)(f)
    return f


def pop_answer(params: dict) -> AnswerSettings:
    """Take the answer options out of a command's parameters, as `AnswerSettings`."""
    given = {s.field: params.pop(dest(s)) for s in ANSWER_SETTINGS}
    return AnswerSettings(**{k: v for k, v in given.items() if v is not None})
