"""The HTTP layer of `lift-mlx serve`: the server and its request handler (routing, the
loopback and API key checks, limits, errors in OpenAI's shape, server-sent events) and the
endpoints.

What a request may ask for is `requests.py`'s, the shape of the answers `responses.py`'s, the
model and its adapters `model.py`'s, the absorb jobs `jobs.py`'s. From `mlx_lm.server` it takes
that server's shape (a ThreadingHTTPServer, one thread per connection). Its request handler is
not reused: it loads any model or adapter path a request names, answers errors as bare strings,
reads bodies of any size, and its internals change from one mlx-lm release to the next.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import math
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import __version__, library, store
from ..answer import MEMORY_TOKENS, backing
from ..errors import LiftError
from ..presets import adapter_answers, adapter_checks
from .jobs import Absorber, QueueFull
from .model import (
    DocumentGone,
    PromptRefused,
    ServedModel,
    chat_prompt,
    generate,
    last_question,
    route,
)
from .requests import (
    DEFAULT_DOCUMENT_MB,
    MAX_CHAT_BYTES,
    ApiError,
    ChatRequest,
    absorb_request,
    chat_request,
)
from .responses import (
    DONE,
    chunk,
    completion,
    completion_head,
    document_json,
    event,
    model_list,
    sources_field,
    sources_json,
    usage_chunk,
    usage_json,
)

MAX_CONNECTIONS = 64  # requests handled at once; more get 503 (a connection that has sent no
# request takes none of these slots)
MAX_OPEN_CONNECTIONS = 256  # connections at once, idle or not (one thread each); more get 503
LOCK_WAIT_S = 300.0  # longest a request waits for the model before it gets 503
SOCKET_TIMEOUT_S = 60.0  # a client that neither sends nor reads for this long is dropped
# A request's line and headers must arrive within HEADER_WAIT_S, its body within HEADER_WAIT_S
# more plus its size at BODY_BYTES_PER_S (a slow link's rate: a 16 MiB document gets 69 s).
# A socket timeout alone restarts with each byte: one byte every 20 s kept a connection 81 s.
HEADER_WAIT_S = 5.0
BODY_BYTES_PER_S = 256 * 2**10
RETRY_AFTER_S = 1  # what a 503 asks the client to wait
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


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

    def setup(self):
        super().setup()
        self._reader = _DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)
        self._requests = 0

    def handle_one_request(self):
        if self._requests:  # kept alive: the next request may come within the idle timeout
            self._reader.deadline = time.monotonic() + self.timeout
            try:
                if not self.rfile.peek(1):
                    self.close_connection = True
                    return
            except OSError:  # TimeoutError among them
                self.close_connection = True
                return
        self._requests += 1
        self._reader.deadline = time.monotonic() + HEADER_WAIT_S
        super().handle_one_request()

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
        self._reader.deadline = None  # the headers are in; a body sets its own
        self.connection.settimeout(self.timeout)  # for writes, and streams that take long
        if not self.server.slots.acquire(blocking=False):
            self._discard_body()
            return self._send_error(ApiError(503, "too many requests at once; try again",
                                             "busy"))
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
            self.server.slots.release()
            if not self.server.quiet:
                self.server.log(f"{self.command} {urlsplit(self.path).path} "
                                f"{getattr(self, '_status', '-')} "
                                f"{time.perf_counter() - start:.2f}s")

    def _check_caller(self) -> None:
        host = _host_name(self.headers.get("Host") or "")
        if self.server.loopback and host and host not in self.server.allowed_hosts and \
                not _is_loopback_address(host):
            # A page that renamed its site to this address (DNS rebinding) must not get in.
            raise ApiError(403, f"this server answers requests for localhost, not {host!r} "
                           "(lift-mlx serve --allow-host NAME adds a name)", "forbidden_host")
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
        if status == 503:
            self.send_header("Retry-After", str(RETRY_AFTER_S))
        self.end_headers()
        self._sent = True
        self.wfile.write(data)

    def _send_error(self, e: ApiError) -> None:
        self.close_connection = True
        try:
            if not self._sent:
                self._send_json(e.status, e.body())
            elif getattr(self, "_streaming", False):  # mid-stream: an error event, then end
                self.wfile.write(event(e.body()))
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
        self._reader.deadline = (time.monotonic() + HEADER_WAIT_S
                                 + int(length) / BODY_BYTES_PER_S)
        raw = self.rfile.read(int(length))
        self._reader.deadline = None
        self.connection.settimeout(self.timeout)
        if len(raw) < int(length):
            raise ApiError(400, "the body is shorter than its Content-Length", "bad_request")
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_not_a_number,
                              parse_float=_finite)
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text", "invalid_json") from None
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"the body is not valid JSON ({str(e)[:120]})",
                           "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_json")
        return body

    def _discard_body(self) -> None:
        """Read a small body that will not be used, so that closing does not reset the
        connection before the client reads the answer."""
        length = self.headers.get("Content-Length") or ""
        if length.isdigit() and int(length) <= MAX_CHAT_BYTES:
            try:
                self._reader.deadline = time.monotonic() + HEADER_WAIT_S
                self.rfile.read(int(length))
            except OSError:
                pass
            finally:
                self._reader.deadline = None
                self.connection.settimeout(self.timeout)

    # Endpoints

    def _health(self) -> None:
        jobs = self.server.absorber.jobs()
        self._send_json(200, {"status": "ok", "model": self.server.base_id,
                              "documents": len(self.server.documents()),
                              "busy": self.server.served.lock.locked(),
                              "absorbing": sum(j.status == "running" for j in jobs),
                              "queued": sum(j.status == "queued" for j in jobs)})

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": self._model_list()})

    def _model(self, ident: str) -> None:
        for m in self._model_list():
            if m["id"] == ident:
                return self._send_json(200, m)
        raise ApiError(404, f"no model {ident!r}; GET /v1/models lists them", "model_not_found")

    def _documents(self) -> None:
        docs = [document_json(e) for e in self.server.documents()]
        jobs = [j.to_json() for j in self.server.absorber.jobs()]
        self._send_json(200, {"object": "list", "data": docs, "jobs": jobs})

    def _document(self, ident: str) -> None:
        job = self.server.absorber.get(ident)
        self._send_json(200, job.to_json() if job else
                        document_json(self.server.find_document(ident)))

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
        limit = self.server.max_document_bytes
        req = absorb_request(self._body(limit + 2**16), limit, self.server.served.lm.name)
        among = library.entries()
        if req.name is not None and (problem := library.name_problem(req.name, among)):
            raise ApiError(400, problem, "invalid_value", "name")
        taken = [e for e in among if e.name == req.name]
        if taken and taken[0].field("document", "sha256") != req.document.sha256:
            raise ApiError(409, f"the name {req.name!r} is taken by another document",
                           "name_taken", "name")
        try:
            job = self.server.absorber.submit(req)
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
                adapter = served.run(served.adapter, entry) if entry is not None else None
            except DocumentGone as e:
                raise ApiError(404, str(e), "model_not_found", "model") from None
            except LiftError as e:
                raise ApiError(500, str(e), "document_damaged") from None
            try:
                use = self.server.adapter_answers if req.use_adapter is None else req.use_adapter
                check = self.server.adapter_checks if req.check is None else req.check
                checks = use and check and req.context and req.retrieve
                # checked, the prompt is the plain base's, for where no passage backs the
                # adapter's answer from memory
                prompt, held = chat_prompt(served, req.messages, adapter, context=req.context,
                                           retrieve=req.retrieve,
                                           max_tokens=req.sampling.max_tokens,
                                           answers=use and not checks)
                if adapter is not None and route(adapter, req.messages) is None:
                    # not about the document: the plain base answers, as `ask` does
                    prompt, held = chat_prompt(served, req.messages, adapter, context=False,
                                               max_tokens=req.sampling.max_tokens,
                                               answers=False)
                    adapter = None
                if adapter is not None and not use:
                    adapter = None  # the plain base reads the document's passages, as `ask`
                checking = adapter is not None and checks
                if checking:  # the adapter answers from memory first; the base reads if need be
                    memory_prompt, _ = chat_prompt(served, req.messages, adapter, context=False,
                                                   max_tokens=req.sampling.max_tokens)
            except PromptRefused as e:
                raise ApiError(400, str(e), e.code, "messages") from None
            except store.Damaged as e:  # its index, found damaged when it was first read
                raise ApiError(500, str(e), "document_damaged") from None
            if self._client_gone():
                return
            if checking:
                served.run(served.activate, adapter)
                memory = replace(req.sampling,
                                 max_tokens=min(req.sampling.max_tokens, MEMORY_TOKENS))
                said = list(served.stream(generate(served, memory_prompt, memory)))
                source = backing("".join(p[0] for p in said), last_question(req.messages), held)
                if source is not None:  # shown, with the passage that holds it
                    return self._reply(req, iter(said), len(memory_prompt),
                                       sources_json([source]))
                adapter = None  # no passage backs it: the plain base reads them
            served.run(served.activate, adapter)
            pieces = served.stream(generate(served, prompt, req.sampling))
            try:
                self._reply(req, pieces, len(prompt), sources_json(held))
            finally:
                pieces.close()  # on the model's thread, before the next request may use it
        finally:
            served.lock.release()

    def _reply(self, req: ChatRequest, pieces: Iterator[tuple], prompt_tokens: int,
               sources: list[dict]) -> None:
        head = completion_head(req.model)
        finish, count, text = "stop", 0, []  # stream_generate always yields a finish
        if req.stream:
            self._status, self._streaming = 200, True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self._sent = True
            self.wfile.write(event(chunk(head, {"role": "assistant", "content": ""})))
        for piece, reason, count in pieces:
            finish = reason or finish
            if req.stream and piece:
                self.wfile.write(event(chunk(head, {"content": piece})))
            text.append(piece)
            if count % 8 == 0 and self._client_gone():
                self.close_connection = True
                return  # nobody reads on: free the model for the next request
        usage = usage_json(prompt_tokens, count)
        if not req.stream:
            return self._send_json(200, {**completion(head, "".join(text), finish, usage),
                                         **sources_field(sources)})
        self.wfile.write(event({**chunk(head, {}, finish), **sources_field(sources)}))
        if req.include_usage:
            self.wfile.write(event(usage_chunk(head, usage)))
        self.wfile.write(DONE)

    def _model_list(self) -> list[dict]:
        return model_list(self.server.base_id, self.server.started, self.server.documents())


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side whose reads fail with TimeoutError at `deadline` (monotonic
    seconds; None: only the idle timeout), however slowly the bytes trickle in."""

    def __init__(self, sock: socket.socket, idle_s: float):
        self.sock, self.idle_s = sock, idle_s
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is None:
            self.sock.settimeout(self.idle_s)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


def _not_a_number(name: str):
    raise ValueError(f"{name} is not a JSON number")  # Python's json takes it, JSON does not


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def _host_name(header: str) -> str:
    """The name of a Host header, without its port or an IPv6 address's brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _is_loopback_address(host: str) -> bool:
    """Whether `host` is a loopback address written out in full (127.0.0.2, ::1); not a name
    that starts like one (127.0.0.1.nip.io) nor a short form (127.1) a resolver may treat as
    a name."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    return host == "localhost" or _is_loopback_address(host)


class LiftServer(ThreadingHTTPServer):
    """The HTTP server: the served model, the absorb jobs and the limits."""

    daemon_threads = True
    # 200 clients connecting at once must not wait out a dropped SYN (1 s) for their answer
    request_queue_size = 2 * MAX_OPEN_CONNECTIONS

    def __init__(self, lm, host: str = "127.0.0.1", port: int = 8080, *, kept: int = 4,
                 max_document_bytes: int = int(DEFAULT_DOCUMENT_MB * 2**20),
                 api_key: str | None = None, quiet: bool = False, log_stream=None,
                 allowed_hosts: tuple[str, ...] = ()):
        self.log_stream = log_stream or sys.stderr
        self.quiet = quiet
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.address_family = family
        super().__init__((host, port), Handler)
        self.loopback = _is_loopback(host)
        self.api_key = api_key
        self.allowed_hosts = LOOPBACK_NAMES | {_host_name(h) for h in allowed_hosts}
        self.max_document_bytes = max_document_bytes
        self.served = ServedModel(lm, kept)
        self.base_id = base_model_id(lm.name)
        # what answers a document's chat that leaves use_adapter out (models/presets.json)
        self.adapter_answers = adapter_answers(lm.name)
        self.adapter_checks = adapter_checks(lm.name)  # and whether it checks (--check)
        self.started = int(time.time())
        self.absorber = Absorber(lm, self.log)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)  # requests
        self._open = threading.BoundedSemaphore(MAX_OPEN_CONNECTIONS)  # connections
        store.clean_partials()  # what a killed absorb left behind

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def log(self, message: str) -> None:
        print(message.rstrip("\n"), file=self.log_stream, flush=True)

    def process_request(self, request, client_address):
        if not self._open.acquire(blocking=False):
            body = json.dumps(ApiError(503, "too many connections; try again", "busy").body())
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/"
                            b"json\r\nRetry-After: %d\r\n\r\n%s"
                            % (RETRY_AFTER_S, body.encode()))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.release()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a vanished client is no news
            self.log(traceback.format_exc())

    def close(self) -> None:
        """Stop serving, cancel the absorb jobs (nothing partial is kept) and close; the model
        stays locked, so no answer is left half-computed when the process exits."""
        self.shutdown()
        self.absorber.stop()
        self.served.lock.acquire(timeout=30)
        self.served.close()
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


def base_model_id(name: str) -> str:
    """The base model's id: its alias or hub id, or the folder name of a local path."""
    path = Path(name).expanduser()
    return path.name if path.exists() else name
