"""`lift-mlx serve`: every absorbed document as a model on a local OpenAI-compatible server.

`GET /v1/models` lists the base model and each document of the library absorbed on it, by
name. `POST /v1/chat/completions` with a document's name as `model` answers as `lift-mlx ask`
does: the last user message is the question, the prompt holds the passages of the document that
match it (the head+tail view with `"retrieve": false`, the question alone with `"context":
false`), and the document's adapter is on the base; streamed as server-sent events with
`"stream": true`. `POST /v1/documents` absorbs a text in the background; `GET`/`DELETE
/v1/documents/ID` follow or cancel the job, or show or remove a document. `GET /health`.

- `command.py`: the `serve` command, which loads the model and serves until Ctrl-C.
- `http.py`: `LiftServer` and its request `Handler`: routing, the loopback and API key checks,
  limits, errors in OpenAI's shape, and the endpoints.
- `requests.py`: what a request may ask for: the fields of a chat completion or an absorb, their
  checks, defaults and limits, and `ApiError`, a refusal sent as OpenAI's error object.
- `responses.py`: what the server answers: models, documents, chat completions and the chunks
  of a stream, in OpenAI's shape.
- `model.py`: the served model: one document's adapter at a time on a view of the base, the
  generation lock, the one thread that does all its MLX work, prompts and generation.
- `jobs.py`: absorb jobs started over HTTP, worked one at a time in a background thread.
"""
