"""`lift-mlx serve`: every absorbed document as a model on a local OpenAI-compatible server.

`GET /v1/models` lists the base model and each document of the library absorbed on it, by
name. `POST /v1/chat/completions` with a document's name as `model` answers as `lift-mlx ask`
does: the last user message is the question, the prompt holds the head+tail view of the
document (or the question alone with `"context": false`), and the document's adapter is on the
base; streamed as server-sent events with `"stream": true`. `POST /v1/documents` absorbs a text
in the background; `GET`/`DELETE /v1/documents/ID` follow or cancel the job, or show or remove
a document. `GET /health`.

This module is the HTTP layer: routing, request checks and limits, errors in OpenAI's shape,
server-sent events, and the `serve` command. The model and its adapters are `model.py`'s, the
absorb jobs `jobs.py`'s. From `mlx_lm.server` it uses the message-content normalisation
(`process_message_content`) and that server's shape (a ThreadingHTTPServer, one thread per
connection). Its request handler is not reused: it loads any model or adapter path a request
names, answers errors as bare strings, reads bodies of any size, and its internals change from
one mlx-lm release to the next.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import click

from .. import __version__, backend, library, store
from ..errors import LiftError
from ..options import model_option
from .jobs import Absorber, QueueFull
from .model import DocumentGone, PromptRefused, ServedModel, chat_prompt, generate, route

MAX_CHAT_BYTES = 2**20  # a chat request is a few messages
DEFAULT_DOCUMENT_MB = 16.0
MAX_MESSAGES = 512
MAX_STOPS = 4  # as OpenAI's API
MAX_CONNECTIONS = 64  # handler threads at once; more get 503
LOCK_WAIT_S = 300.0  # longest a request waits for the model before it gets 503
SOCKET_TIMEOUT_S = 60.0  # a client that neither sends nor reads for this long is dropped
FINGERPRINT = f"lift-mlx-{__version__}"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


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



# The request fields read, as (kind, low, high, default); None: no bound.
_NUMBERS = {
    "max_tokens": (int, 1, None, 256),  # the default of `lift-mlx ask`
    "temperature": (float, 0, None, 0.0),  # greedy, as `ask`
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
    model: str
    messages: list[dict]
    stream: bool
    include_usage: bool
    context: bool
    stops: list[str]
    logit_bias: dict[int, float] | None
    numbers: dict


def chat_request(body: dict, window: int, vocab: int) -> ChatRequest:
    """The fields of a chat completion request, checked (an ApiError for each mistake)."""
    from mlx_lm.server import process_message_content

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
    bias = body.get("logit_bias")
    if bias is not None:
        try:
            bias = {int(k): float(v) for k, v in bias.items()}
        except (AttributeError, TypeError, ValueError, OverflowError):
            bias = {-1: 0.0}
        if not all(0 <= k < vocab for k in bias) or len(bias) > 1024:
            raise ApiError(400, f"logit_bias must map up to 1024 token ids (0 to {vocab - 1}) "
                           "to numbers", "invalid_value", "logit_bias")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "invalid_type",
                       "stream_options")
    return ChatRequest(model, messages, _flag(body, "stream", False),
                       _flag(options, "include_usage", False), _flag(body, "context", True),
                       stops, bias, numbers)


def _fits(value, default) -> bool:
    """Whether a JSON value can stand for a setting whose default is `default`."""
    if isinstance(default, bool) or default is None:  # None: a switch left to the device
        return isinstance(value, bool) or (default is None and value is None)
    if isinstance(default, tuple):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(default, str):
        return isinstance(value, str)
    kinds = (int, float) if isinstance(default, float) else (int,)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _document_settings(body: dict):
    """The absorb settings a request asks for: a preset and flat overrides, type-checked."""
    from ..config import PRESETS, SETTINGS, preset

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
        return preset(name, **checked)
    except LiftError as e:
        raise ApiError(400, str(e), "invalid_value", "settings") from None


class Handler(BaseHTTPRequestHandler):
    """One request: routing, limits, errors in OpenAI's shape, never a traceback."""

    server: LiftServer
    timeout = SOCKET_TIMEOUT_S
    server_version = f"lift-mlx/{__version__}"
    _sent = False  # whether a response (or a stream's headers) went out

    # Routing: path (after /v1/) -> method; "name/" takes the rest of the path as an id.
    ROUTES = {
        "GET": {"health": "_health", "models": "_models", "models/": "_model",
                "documents": "_documents", "documents/": "_document"},
        "POST": {"chat/completions": "_chat", "documents": "_absorb"},
        "DELETE": {"models/": "_delete", "documents/": "_delete"},
    }

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _route(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        path = path.removeprefix("/v1/") if path.startswith("/v1/") else path.lstrip("/")
        head, _, rest = path.partition("/")
        routes = self.ROUTES.get(self.command, {})
        if path in routes:
            return getattr(self, routes[path])()
        if rest and f"{head}/" in routes:
            return getattr(self, routes[f"{head}/"])(unquote(rest))
        other = [m for m, r in self.ROUTES.items() if path in r or (rest and f"{head}/" in r)]
        if other:
            raise ApiError(405, f"{self.command} is not allowed here; use {', '.join(other)}",
                           "method_not_allowed")
        raise ApiError(404, f"no such endpoint: {urlsplit(self.path).path}", "not_found")

    def _handle(self) -> None:
        start = time.perf_counter()
        try:
            self._check_caller()
            self._route()
        except ApiError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away: its slot is free again
        except Exception:  # a bug: the log gets the traceback, the client one line
            self.server.log(traceback.format_exc())
            self._send_error(ApiError(500, "internal error; the server's log has the details",
                                      "internal_error"))
        finally:
            if not self.server.quiet:
                self.server.log(f"{self.command} {urlsplit(self.path).path} "
                                f"{getattr(self, '_status', '-')} "
                                f"{time.perf_counter() - start:.2f}s")

    def _check_caller(self) -> None:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if self.server.loopback and host and host not in LOOPBACK_NAMES and \
                not host.startswith("127."):
            # A page that renamed its site to this address (DNS rebinding) must not get in.
            raise ApiError(403, f"this server answers requests for localhost, not {host!r}",
                           "forbidden_host")
        key = self.server.api_key
        if key and not hmac.compare_digest(
                self.headers.get("Authorization", ""), f"Bearer {key}"):
            raise ApiError(401, "a valid API key is required: send 'Authorization: Bearer KEY' "
                           "(the openai client's api_key)", "invalid_api_key")

    # Sending

    def _send_json(self, status: int, obj) -> None:
        data = b"" if obj is None else json.dumps(obj).encode()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._sent = True
        self.wfile.write(data)

    def _send_error(self, e: ApiError) -> None:
        self.close_connection = True
        try:
            if not self._sent:
                self._send_json(e.status, e.body())
            elif getattr(self, "_streaming", False):  # mid-stream: an error event, then end
                self.wfile.write(f"data: {json.dumps(e.body())}\n\n".encode())
        except OSError:
            pass

    def send_error(self, code, message=None, explain=None):
        """Errors http.server finds itself (bad request line, headers too long, ...)."""
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in 1.0
            self.request_version = "HTTP/1.0"
        kind = "bad_request"
        if code == 501:  # a method no endpoint has
            code, message, kind = 405, f"{self.command} is not allowed", "method_not_allowed"
        self._send_error(ApiError(code, message or self.responses.get(code, ("error",))[0],
                                  kind))

    def log_message(self, format, *args):
        pass  # _handle logs one line per request

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (so nothing it asked for is wanted)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # Reading

    def _body(self, limit: int) -> dict:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length, not chunked",
                           "length_required")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a Content-Length header is required", "length_required")
        if not length.isdigit():
            raise ApiError(400, "Content-Length must be a number of bytes", "bad_request")
        if int(length) > limit:
            raise ApiError(413, f"the request body is {int(length):,} bytes, over the limit of "
                           f"{limit:,}", "request_too_large")
        if self.headers.get_content_type() != "application/json":
            raise ApiError(415, "send the body as JSON with 'Content-Type: application/json'",
                           "unsupported_media_type")
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):
            raise ApiError(400, "the body is shorter than its Content-Length", "bad_request")
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text", "invalid_json") from None
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"the body is not valid JSON ({str(e)[:120]})",
                           "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_json")
        return body

    # Endpoints

    def _health(self) -> None:
        jobs = self.server.absorber.jobs()
        self._send_json(200, {"status": "ok", "model": self.server.base_id,
                              "documents": len(self.server.documents()),
                              "busy": self.server.served.lock.locked(),
                              "absorbing": sum(j.status == "running" for j in jobs),
                              "queued": sum(j.status == "queued" for j in jobs)})

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": self.server.model_list()})

    def _model(self, ident: str) -> None:
        for m in self.server.model_list():
            if m["id"] == ident:
                return self._send_json(200, m)
        raise ApiError(404, f"no model {ident!r}; GET /v1/models lists them", "model_not_found")

    def _documents(self) -> None:
        docs = [self.server.document_json(e) for e in self.server.documents()]
        jobs = [j.to_json() for j in self.server.absorber.jobs()]
        self._send_json(200, {"object": "list", "data": docs, "jobs": jobs})

    def _document(self, ident: str) -> None:
        job = self.server.absorber.get(ident)
        self._send_json(200, job.to_json() if job else
                        self.server.document_json(self.server.find_document(ident)))

    def _delete(self, ident: str) -> None:
        job = self.server.absorber.get(ident)
        if job is not None:
            self.server.absorber.cancel(job)
            return self._send_json(200, job.to_json())
        entry = self.server.find_document(ident)
        library.remove(entry.key)
        self.server.served.forget(entry.key)
        self._send_json(200, {"id": entry.name, "object": "model", "deleted": True})

    def _absorb(self) -> None:
        from ..ingest import text_document

        limit = self.server.max_document_bytes
        body = self._body(limit + 2**16)
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
        settings = _document_settings(body)
        try:
            document = text_document(text, source)
        except LiftError:
            raise ApiError(400, "the document is empty: send its text in 'text'",
                           "empty_document", "text") from None
        taken = [e for e in library.entries() if e.name == name]
        if taken and taken[0].field("document", "sha256") != document.sha256:
            raise ApiError(409, f"the name {name!r} is taken by another document",
                           "name_taken", "name")
        try:
            job = self.server.absorber.submit(document, settings, name)
        except QueueFull as e:
            raise ApiError(429, str(e), "too_many_jobs") from None
        self._send_json(202, job.to_json())

    def _chat(self) -> None:
        served = self.server.served
        req = chat_request(self._body(MAX_CHAT_BYTES), served.lm.window,
                           int(served.lm.config.get("vocab_size") or 2**31))
        entry = None if req.model == self.server.base_id else self.server.find_document(
            req.model, param="model")
        if not served.lock.acquire(timeout=LOCK_WAIT_S):
            raise ApiError(503, "the model is busy; try again", "busy")
        try:
            try:
                adapter = served.adapter(entry) if entry is not None else None
            except DocumentGone as e:
                raise ApiError(404, str(e), "model_not_found", "model") from None
            except LiftError as e:
                raise ApiError(500, str(e), "document_damaged") from None
            try:
                prompt = chat_prompt(served, req.messages, adapter, context=req.context,
                                     max_tokens=req.numbers["max_tokens"])
                if adapter is not None and route(adapter, req.messages) is None:
                    # not about the document: the plain base answers, as `ask` does
                    prompt = chat_prompt(served, req.messages, adapter, context=False,
                                         max_tokens=req.numbers["max_tokens"])
                    adapter = None
            except PromptRefused as e:
                raise ApiError(400, str(e), e.code, "messages") from None
            if self._client_gone():
                return
            served.activate(adapter)
            pieces = generate(served, prompt, stops=req.stops, logit_bias=req.logit_bias,
                              **req.numbers)
            self._reply(req, pieces, len(prompt))
        finally:
            served.lock.release()

    def _reply(self, req: ChatRequest, pieces: Iterator[tuple], prompt_tokens: int) -> None:
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        head = {"id": ident, "created": int(time.time()), "model": req.model,
                "system_fingerprint": FINGERPRINT}
        finish, count, text = "stop", 0, []  # stream_generate always yields a finish
        if req.stream:
            self._status, self._streaming = 200, True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self._sent = True
            self._event({**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""},
                 "logprobs": None, "finish_reason": None}]})
        for piece, reason, count in pieces:
            finish = reason or finish
            if req.stream and piece:
                self._event({**head, "object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": {"content": piece}, "logprobs": None,
                     "finish_reason": None}]})
            text.append(piece)
            if count % 8 == 0 and self._client_gone():
                self.close_connection = True
                return  # nobody reads on: free the model for the next request
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                 "total_tokens": prompt_tokens + count}
        if not req.stream:
            return self._send_json(200, {**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                 "logprobs": None, "finish_reason": finish}], "usage": usage})
        self._event({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
        if req.include_usage:
            self._event({**head, "object": "chat.completion.chunk", "choices": [],
                         "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, obj: dict) -> None:
        self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LiftServer(ThreadingHTTPServer):
    """The HTTP server: the served model, the absorb jobs and the limits."""

    daemon_threads = True
    request_queue_size = 128  # 50 clients connecting at once must not be refused

    def __init__(self, lm, host: str = "127.0.0.1", port: int = 8080, *, kept: int = 4,
                 max_document_bytes: int = int(DEFAULT_DOCUMENT_MB * 2**20),
                 api_key: str | None = None, quiet: bool = False, log_stream=None):
        self.log_stream = log_stream or sys.stderr
        self.quiet = quiet
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.address_family = family
        super().__init__((host, port), Handler)
        self.loopback = _is_loopback(host)
        self.api_key = api_key
        self.max_document_bytes = max_document_bytes
        self.served = ServedModel(lm, kept)
        self.base_id = base_model_id(lm.name)
        self.started = int(time.time())
        self.absorber = Absorber(lm, self.log)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        store.clean_partials()  # what a killed absorb left behind

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def log(self, message: str) -> None:
        print(message.rstrip("\n"), file=self.log_stream, flush=True)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/"
                            b"json\r\n\r\n" + json.dumps(ApiError(
                                503, "too many connections; try again", "busy").body()).encode())
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a vanished client is no news
            self.log(traceback.format_exc())

    def close(self) -> None:
        """Stop serving, cancel the absorb jobs (nothing partial is kept) and close; the model
        stays locked, so no answer is left half-computed when the process exits."""
        self.shutdown()
        self.absorber.stop()
        self.served.lock.acquire(timeout=30)
        self.server_close()

    # The library, as this server's base model sees it

    def documents(self) -> list[library.Entry]:
        return [e for e in library.entries()
                if not e.problem and e.field("model", "fingerprint") == self.served.fingerprint]

    def find_document(self, ident: str, param: str | None = None) -> library.Entry:
        docs = self.documents()
        match = [e for e in docs if e.name == ident] or [e for e in docs if e.key == ident]
        if match:
            return match[0]
        names = ", ".join([self.base_id] + [e.name for e in docs])
        raise ApiError(404, f"no model {ident!r} here; this server has: {names}",
                       "model_not_found", param)

    def document_json(self, e: library.Entry) -> dict:
        return {"id": e.name, "object": "document", "key": e.key,
                "source": e.field("document", "source"),
                "sha256": e.field("document", "sha256"),
                "tokens": e.field("document", "tokens"),
                "created": e.field("created"), "absorb_seconds": round(e.absorb_seconds, 2),
                "settings": e.field("settings", default={})}

    def model_list(self) -> list[dict]:
        base = {"id": self.base_id, "object": "model", "created": self.started,
                "owned_by": "lift-mlx"}
        return [base] + [{"id": e.name, "object": "model", "created": _epoch(e),
                          "owned_by": "lift-mlx", "document": self.document_json(e)}
                         for e in self.documents()]


def _epoch(e: library.Entry) -> int:
    try:
        return int(time.mktime(time.strptime(str(e.field("created")), "%Y-%m-%dT%H:%M:%S%z")))
    except ValueError:
        return int(e.path.stat().st_mtime)


def base_model_id(name: str) -> str:
    """The base model's id: its alias or hub id, or the folder name of a local path."""
    from pathlib import Path

    path = Path(name).expanduser()
    return path.name if path.exists() else name


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
    @click.option("--quiet", "-q", is_flag=True, help="No log line per request.")
    def serve(model, host, port, kept, max_document_mb, api_key, quiet):
        """Serve the base model and every absorbed document as models of a local
        OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/documents, /health).

        \b
        Point any OpenAI client at http://127.0.0.1:8080/v1 and use a document's name
        (`lift-mlx docs list`) as the model: it answers as `lift-mlx ask` does. Add
        "context": false to a request to answer with the adapter alone.
        """
        import signal

        from ..absorb import raise_interrupt
        from ..models import load_model

        backend.use_recommended_wired_limit()
        lm = load_model(model)
        try:
            server = LiftServer(lm, host, port, kept=kept, quiet=quiet,
                                max_document_bytes=int(max_document_mb * 2**20),
                                api_key=api_key)
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
