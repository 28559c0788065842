"""What a request to `lift-mlx serve` may ask for: the fields of a chat completion and of an
absorb, their checks, defaults and limits, and `ApiError`, the refusal sent as OpenAI's error
object.

What a request leaves out is answered as `lift-mlx ask` answers (`AnswerSettings`). From
`mlx_lm.server` it uses the message-content normalisation (`process_message_content`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlx_lm.server import process_message_content

from .. import library
from ..config import PRESETS, SETTINGS, Settings, preset
from ..errors import LiftError
from ..ingest import Document, text_document
from ..presets import recommended_settings
from .model import ANSWER, Sampling

MAX_CHAT_BYTES = 2**20  # a chat request is a few messages
DEFAULT_DOCUMENT_MB = 16.0
MAX_MESSAGES = 512
MAX_STOPS = 4  # as OpenAI's API
# Stops are delimiters ("\n\n", "</answer>", "User:"); 256 characters is far above any of them
# and keeps the per-token matching small (it looks back as far as the longest stop).
MAX_STOP_CHARS = 256


class ApiError(Exception):
    """A request the server refuses, sent as OpenAI's error object."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    def body(self) -> dict:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param,
                          "code": self.code}}


# The sampling fields read, as (kind, low, high, default); None: no bound.
_NUMBERS = {
    "max_tokens": (int, 1, None, ANSWER.max_tokens),
    "temperature": (float, 0, None, ANSWER.temp),
    "top_p": (float, 0, 1, 1.0),
    "top_k": (int, 0, None, 0),
    "min_p": (float, 0, 1, 0.0),
    "repetition_penalty": (float, 0, None, 0.0),  # mlx-lm's: 0 is off
    "presence_penalty": (float, -2, 2, 0.0),
    "frequency_penalty": (float, -2, 2, 0.0),
    "seed": (int, 0, 2**63 - 1, None),
}


def _number(body: dict, name: str, kind, low, high, default):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int,) if kind is int else (int, float)):
        raise ApiError(400, f"{name} must be {'an integer' if kind is int else 'a number'}",
                       "invalid_type", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number", "invalid_value", name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ApiError(400, f"{name} must be {bounds}", "invalid_value", name)
    return value


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", "invalid_type", name)
    return value


@dataclass
class ChatRequest:
    """A chat completion request, checked."""

    model: str
    messages: list[dict]
    stream: bool
    include_usage: bool
    context: bool  # the head+tail view of the document in the prompt
    retrieve: bool  # with context: the passages that match the question instead of the view
    sampling: Sampling
    # a document's adapter answers (true), or the plain base reading the document (false);
    # None: what models/presets.json measured best for the served model, as `ask` decides
    use_adapter: bool | None = None
    # the adapter's answer from memory, shown where a retrieved passage backs it, else the
    # plain base's from the passages (`--check`); None: as models/presets.json measured
    check: bool | None = None


def chat_request(body: dict, window: int, vocab: int) -> ChatRequest:
    """The fields of a chat completion request, checked (an ApiError for each mistake)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model must name a model of GET /v1/models", "invalid_type", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise ApiError(400, f"messages must be a list of 1 to {MAX_MESSAGES} messages",
                       "invalid_type", "messages")
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        parts_ok = isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content)
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and (content is None or isinstance(content, str) or parts_ok)):
            raise ApiError(400, "each message needs a role and a text content (a string or a "
                           "list of text parts)", "invalid_type", "messages")
    messages = [dict(m) for m in messages]
    try:
        process_message_content(messages)  # text parts joined, as mlx_lm.server does
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ApiError(400, f"messages are malformed ({e})", "invalid_value",
                       "messages") from None
    for unsupported in ("logprobs", "tools"):
        if body.get(unsupported):
            raise ApiError(400, f"{unsupported} is not supported by lift-mlx serve",
                           "unsupported", unsupported)
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", "invalid_value", "n")
    numbers = {name: _number(body, name, *spec) for name, spec in _NUMBERS.items()}
    if numbers["top_k"] >= vocab:  # mlx-lm's sampler takes 0 (off) or (0, vocab)
        raise ApiError(400, f"top_k must be between 0 (off) and {vocab - 1}, the model's "
                       "vocabulary less one", "invalid_value", "top_k")
    if body.get("max_completion_tokens") is not None:
        numbers["max_tokens"] = _number(body, "max_completion_tokens", *_NUMBERS["max_tokens"])
    if numbers["max_tokens"] >= window:
        raise ApiError(400, f"max_tokens must be below the model's window of {window} tokens",
                       "invalid_value", "max_tokens")
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    if not (isinstance(stops, list) and len(stops) <= MAX_STOPS
            and all(isinstance(s, str) and s for s in stops)):
        raise ApiError(400, f"stop must be a string or a list of up to {MAX_STOPS} strings",
                       "invalid_type", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"each stop string must be at most {MAX_STOP_CHARS} characters",
                       "invalid_value", "stop")
    bias = body.get("logit_bias")
    if bias is not None:
        try:
            bias = {int(k): float(v) for k, v in bias.items()}
        except (AttributeError, TypeError, ValueError, OverflowError):
            bias = {-1: 0.0}
        if not all(0 <= k < vocab and math.isfinite(v) for k, v in bias.items()) \
                or len(bias) > 1024:
            raise ApiError(400, f"logit_bias must map up to 1024 token ids (0 to {vocab - 1}) "
                           "to finite numbers", "invalid_value", "logit_bias")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "invalid_type",
                       "stream_options")
    return ChatRequest(model, messages, _flag(body, "stream", False),
                       _flag(options, "include_usage", False),
                       _flag(body, "context", ANSWER.context),
                       _flag(body, "retrieve", ANSWER.retrieve),
                       Sampling(**numbers, stops=stops, logit_bias=bias),
                       None if body.get("use_adapter") is None else _flag(body, "use_adapter",
                                                                           True),
                       None if body.get("check") is None else _flag(body, "check", False))


def _fits(value, default) -> bool:
    """Whether a JSON value can stand for a setting whose default is `default`."""
    if isinstance(default, bool) or default is None:  # None: a switch left to the device
        return isinstance(value, bool) or (default is None and value is None)
    if isinstance(default, tuple):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(default, str):
        return isinstance(value, str)
    kinds = (int, float) if isinstance(default, float) else (int,)
    return isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)


def _document_settings(body: dict, model: str) -> tuple[str, dict, Settings]:
    """The absorb settings a request asks for on base model `model`: the preset's name, the
    flat overrides (type-checked) and the settings they make as `lift-mlx absorb` makes them,
    over the settings recommended for the model."""
    name = body.get("preset", "default")
    if name not in PRESETS:
        raise ApiError(400, f"preset must be one of {', '.join(PRESETS)}", "invalid_value",
                       "preset")
    overrides = body.get("settings") or {}
    if not isinstance(overrides, dict):
        raise ApiError(400, "settings must be an object of setting names and values",
                       "invalid_type", "settings")
    fields = {name: s.default for name, s in SETTINGS.items()}
    checked = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ApiError(400, f"unknown setting {key!r}; settings are "
                           f"{', '.join(sorted(fields))}", "invalid_value", f"settings.{key}")
        if not _fits(value, fields[key]):
            raise ApiError(400, f"setting {key!r} must be like {fields[key]!r}",
                           "invalid_type", f"settings.{key}")
        checked[key] = tuple(value) if isinstance(value, list) else value
    try:
        settings = preset(name, recommended_settings(model), **checked)
        settings.validate()  # refused now, not as a failed job later
        return name, checked, settings
    except LiftError as e:
        raise ApiError(400, str(e), "invalid_value", "settings") from None


@dataclass
class AbsorbRequest:
    """A request to absorb a document, checked."""

    document: Document
    name: str | None  # the name to give it in the library; None: its own
    preset: str
    overrides: dict  # flat settings over the preset, as `lift-mlx absorb`'s options give them
    settings: Settings  # what the preset and overrides make on the served model


def absorb_request(body: dict, limit: int, model: str) -> AbsorbRequest:
    """The fields of a request to absorb a text of up to `limit` bytes on base model `model`
    (its alias or path), checked (an ApiError for each mistake)."""
    text, name = body.get("text"), body.get("name")
    if not isinstance(text, str):
        raise ApiError(400, "text must be the document's text, as a string (files on the "
                       "server's disk are not read)", "invalid_type", "text")
    if len(text.encode("utf-8")) > limit:
        raise ApiError(413, f"the document is over the limit of {limit:,} bytes (lift-mlx "
                       "serve --max-document-mb raises it)", "document_too_large", "text")
    if name is not None:
        if not isinstance(name, str) or not library.NAME_PATTERN.fullmatch(name):
            raise ApiError(400, f"name must be {library.NAME_RULE} characters",
                           "invalid_value", "name")
    source = body.get("source", name or "http")
    if not isinstance(source, str) or not 0 < len(source) <= 200:
        raise ApiError(400, "source must be a short label (1 to 200 characters)",
                       "invalid_type", "source")
    preset_name, overrides, settings = _document_settings(body, model)
    try:
        document = text_document(text, source)
    except LiftError:
        raise ApiError(400, "the document is empty: send its text in 'text'",
                       "empty_document", "text") from None
    return AbsorbRequest(document, name, preset_name, overrides, settings)
