"""What `lift-mlx serve` answers, in the shape of OpenAI's API: the models (the base and each
document absorbed on it), the documents, and a chat completion, whole or as the chunks of a
stream of server-sent events."""

from __future__ import annotations

import json
import time
import uuid

from .. import __version__, library

FINGERPRINT = f"lift-mlx-{__version__}"
DONE = b"data: [DONE]\n\n"  # the last event of a stream, as OpenAI's


def document_json(e: library.Entry) -> dict:
    """A document of the library as GET /v1/documents shows it."""
    return {"id": e.name, "object": "document", "key": e.key,
            "source": e.field("document", "source"),
            "sha256": e.field("document", "sha256"),
            "tokens": e.field("document", "tokens"),
            "created": e.field("created"), "absorb_seconds": round(e.absorb_seconds, 2),
            "settings": e.field("settings", default={})}


def model_list(base_id: str, started: int, documents: list[library.Entry]) -> list[dict]:
    """The models GET /v1/models lists: the base model, then each document."""
    base = {"id": base_id, "object": "model", "created": started, "owned_by": "lift-mlx"}
    return [base] + [{"id": e.name, "object": "model", "created": _epoch(e),
                      "owned_by": "lift-mlx", "document": document_json(e)}
                     for e in documents]


def _epoch(e: library.Entry) -> int:
    try:
        return int(time.mktime(time.strptime(str(e.field("created")), "%Y-%m-%dT%H:%M:%S%z")))
    except ValueError:
        return int(e.path.stat().st_mtime)


def completion_head(model: str) -> dict:
    """The fields every object of one chat completion starts with: its id, time and model."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": model, "system_fingerprint": FINGERPRINT}


def completion(head: dict, text: str, finish: str, usage: dict) -> dict:
    """A whole chat completion: the answer `text` and why it ended."""
    return {**head, "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text},
         "logprobs": None, "finish_reason": finish}], "usage": usage}


def chunk(head: dict, delta: dict, finish: str | None = None) -> dict:
    """A chunk of a streamed chat completion: a `delta` of the message; the last one has no
    delta but the `finish` reason."""
    return {**head, "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def sources_json(passages) -> list[dict]:
    """The retrieved passages an answer's prompt held: where each is in the document
    (character offsets) and its text, so that a client can show them and check the answer."""
    return [{"start": p.start, "end": p.end, "text": p.text} for p in passages]


def sources_field(sources: list[dict]) -> dict:
    """The extra field that carries them (OpenAI's clients keep it as an extra of the
    response); none where the prompt held no retrieved passage."""
    return {"lift_sources": sources} if sources else {}


def usage_chunk(head: dict, usage: dict) -> dict:
    """The chunk after the last that a stream sends when its options ask to include usage."""
    return {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}


def usage_json(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def event(obj: dict) -> bytes:
    """`obj` as one server-sent event."""
    return f"data: {json.dumps(obj)}\n\n".encode()
