"""`mlx_bluey serve --api`: an OpenAI-compatible chat endpoint for base + adapter or a fused model.

    mlx_bluey serve --api --adapter adapters/bluey                # http://127.0.0.1:8000/v1
    curl localhost:8000/v1/chat/completions -d '{"model": "bluey", "messages": [{"role": "user", "content": "hi!"}]}'

Routes:
    GET  /v1/models             the one served model
    POST /v1/chat/completions   non-streaming, or streaming (`"stream": true`) as server-sent events

Replies come from the project's own generation (generate.generate_reply): every stop id ends a reply,
min_tokens blocks all of them, special tokens are suppressed, text streams a whole word at a time, and a
reply cut by max_tokens ends on its last finished sentence (finish_reason "length"). Requests are
handled one at a time, in arrival order, by a single generation thread; connections are accepted
concurrently and wait in a queue of at most MAX_QUEUED. A streaming client that hangs up stops its
generation at the next token. Errors have OpenAI's body, {"error": {"message", "type", "param", "code"}},
with a 4xx status (503 when the queue is full).
"""

from __future__ import annotations

import json
import queue
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .generation_settings import GenerationSettings
from .serve import HOST, PORT
from .system_message import add_system

MAX_QUEUED = 16  # requests waiting for the generation thread; the next one gets 503
POLL_SECONDS = 0.2  # how often a waiting handler checks that its client is still there
MAX_BODY_BYTES = 1 << 20  # 1 MiB of JSON is far more than any chat a 32k-token model can read
ROLES = ("system", "user", "assistant")
# Request fields beyond the messages: each maps to a GenerationSettings key (top_k, min_p,
# repetition_penalty and min_tokens are the usual extensions local servers accept).
SAMPLING_FIELDS = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "repetition_penalty": ("repetition_penalty", float),
    "seed": ("seed", int),
    "min_tokens": ("min_new_tokens", int),
    "max_tokens": ("max_new_tokens", int),
    "max_completion_tokens": ("max_new_tokens", int),
}
# Accepted only at their no-op value: we cannot honour anything else, and silently ignoring it would lie.
NO_OP_FIELDS = {"n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "stop": None}
IGNORED_FIELDS = {"model", "messages", "stream", "stream_options", "user"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def _text_of(content, index: int) -> str:
    """A message's content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts", f"messages[{index}]")


def parse_messages(raw) -> list[dict]:
    """The request's messages as the chat template takes them: an optional system turn first, then
    user and assistant turns alternating, starting and ending with the user."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        messages.append({"role": message["role"], "content": _text_of(message.get("content"), i)})
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            index = i + len(messages) - len(turns)
            raise ApiError(
                400,
                f"messages[{index}].role is {message['role']!r} where {expected!r} was expected: after an optional "
                "system message, user and assistant turns alternate, starting with the user",
                f"messages[{index}].role",
            )
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's", "messages")
    return messages


def parse_settings(request: dict, defaults: GenerationSettings, max_new_tokens_cap: int) -> GenerationSettings:
    """GenerationSettings from the request's sampling fields; unknown or unsupported fields are errors."""
    settings = GenerationSettings(**vars(defaults))
    for name, value in request.items():
        if name in IGNORED_FIELDS:
            continue
        if name in NO_OP_FIELDS:
            if value not in (NO_OP_FIELDS[name], None) and value != []:
                raise ApiError(400, f"{name}={value!r} is not supported (only {NO_OP_FIELDS[name]!r})", name)
            continue
        if name not in SAMPLING_FIELDS:
            raise ApiError(400, f"unknown field {name!r}", name)
        if value is None:
            continue
        key, kind = SAMPLING_FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ApiError(400, f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}", name)
        setattr(settings, key, kind(value))
    if not 1 <= settings.max_new_tokens <= max_new_tokens_cap:
        raise ApiError(400, f"max_tokens must be between 1 and {max_new_tokens_cap}", "max_tokens")
    if not 0 <= settings.min_new_tokens <= settings.max_new_tokens:
        raise ApiError(400, "min_tokens must be between 0 and max_tokens", "min_tokens")
    if not 0 <= settings.temperature <= 2:
        raise ApiError(400, "temperature must be between 0 and 2", "temperature")
    if not 0 < settings.top_p <= 1:
        raise ApiError(400, "top_p must be above 0 and at most 1", "top_p")
    if settings.top_k < 0 or not 0 <= settings.min_p <= 1 or settings.repetition_penalty <= 0:
        raise ApiError(400, "top_k must be >= 0, min_p in [0, 1] and repetition_penalty above 0")
    return settings


@dataclass
class Job:
    messages: list[dict]
    settings: GenerationSettings
    stream: bool
    include_usage: bool = False  # stream_options.include_usage: one last chunk with the token counts
    # ("start", n_prompt) or ("error", ApiError) first; then ("text", str)... and ("done", Reply) or ("error", e)
    events: queue.Queue = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)


class Generator:
    """One thread that runs the queued jobs in order, so the model only ever serves one request at a time."""

    def __init__(self, model, tokenizer, stop_ids: list[int], context: int):
        self.model, self.tokenizer, self.stop_ids, self.context = model, tokenizer, stop_ids, context
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=MAX_QUEUED)
        self.cancelled = 0  # jobs whose client hung up before the reply was finished
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(503, f"the server is busy ({MAX_QUEUED} requests waiting); try again later") from None

    def stop(self) -> None:
        self.jobs.put(None)

    def _run(self) -> None:
        from .chat_format import prompt_ids
        from .generation import generate_reply

        while (job := self.jobs.get()) is not None:
            if job.cancel.is_set():
                self.cancelled += 1
                continue
            try:  # the tokenizer is only ever used on this thread
                n_prompt = len(prompt_ids(self.tokenizer, job.messages))
            except Exception as error:  # the chat template refused the conversation
                job.events.put(("error", ApiError(400, f"the chat template refused the messages: {error}", "messages")))
                continue
            if n_prompt + job.settings.max_new_tokens > self.context:
                message = f"{n_prompt} prompt tokens + max_tokens {job.settings.max_new_tokens} exceed the model's "
                job.events.put(("error", ApiError(400, message + f"context of {self.context}", "max_tokens")))
                continue
            job.events.put(("start", n_prompt))
            try:
                on_text = (lambda text, job=job: job.events.put(("text", text))) if job.stream else None
                reply = generate_reply(
                    self.model, self.tokenizer, job.messages, job.settings, self.stop_ids, on_text, job.cancel
                )
                if reply.finish_reason == "cancelled":
                    self.cancelled += 1
                job.events.put(("done", reply))
            except Exception as error:  # the request fails, the server goes on
                job.events.put(("error", ApiError(500, f"generation failed: {error}")))


def make_handler(name: str, generator: Generator, defaults: GenerationSettings, log, system: str | None = None):
    """The request handler class, its methods closing over the model's name, generator and defaults (the
    http.server API takes a class): long because the class is, each method is short."""
    created = int(time.time())

    class Handler(BaseHTTPRequestHandler):
        server_version = "mlx_bluey"

        def log_message(self, format, *args):
            log(f"{self.address_string()} {format % args}")

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                model = {"id": name, "object": "model", "created": created, "owned_by": "mlx_bluey"}
                return self._json(200, {"object": "list", "data": [model]})
            self._json(404, ApiError(404, f"no route {self.path}").body())

        def do_POST(self):
            try:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    raise ApiError(404, f"no route {self.path}")
                request = self._read_request()
                if not isinstance(request.get("model"), str):
                    raise ApiError(400, "model is required: the served model's id (GET /v1/models)", "model")
                if request["model"] != name:
                    raise ApiError(404, f"model {request.get('model')!r} does not exist; this server has {name!r}",
                                   "model", "model_not_found")  # fmt: skip
                messages = add_system(parse_messages(request.get("messages")), system)
                settings = parse_settings(request, defaults, generator.context)
                stream, options = request.get("stream") or False, request.get("stream_options") or {}
                if not isinstance(stream, bool) or not isinstance(options, dict):
                    raise ApiError(400, "stream must be true or false, and stream_options an object", "stream")
                job = Job(messages, settings, stream, options.get("include_usage") is True)
                generator.submit(job)
                start = self._next_event(job)  # waits its turn in the queue
                if start is None:
                    return
                if start[0] == "error":
                    raise start[1]
            except ApiError as error:
                return self._json(error.status, error.body())
            except Exception as error:  # a bug of ours: the client still gets an answer, the server goes on
                return self._json(500, ApiError(500, f"{type(error).__name__}: {error}").body())
            (self._stream if job.stream else self._complete)(job, start[1])

        def _read_request(self) -> dict:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise ApiError(400, "Content-Length is not a number") from None
            if not 0 < length <= MAX_BODY_BYTES:
                raise ApiError(400, f"the body must be JSON of 1 to {MAX_BODY_BYTES} bytes (Content-Length {length})")
            try:
                request = json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ApiError(400, f"the body is not valid JSON: {error}") from None
            if not isinstance(request, dict):
                raise ApiError(400, "the body must be a JSON object")
            return request

        def _next_event(self, job: Job):
            """The job's next event; None (and the job cancelled) if the client hangs up while waiting. Polling
            the socket, not waiting for a write to fail, sees it even while the reply has no finished word."""
            while True:
                try:
                    return job.events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if self._client_gone():
                        job.cancel.set()
                        log("client hung up; its generation is cancelled")
                        return None

        def _client_gone(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:  # readable with nothing to read: the peer closed the connection
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _complete(self, job: Job, n_prompt: int) -> None:
            event = self._next_event(job)
            if event is None:
                return
            if event[0] == "error":
                return self._json(event[1].status, event[1].body())
            reply = event[1]
            message = {"role": "assistant", "content": reply.text}
            self._json(200, _completion(name, message, reply, n_prompt))

        def _stream(self, job: Job, n_prompt: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes, after [DONE]
            chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
            try:
                self._event(_chunk(chunk_id, name, {"role": "assistant", "content": ""}))
                while (event := self._next_event(job)) is not None and event[0] == "text":
                    self._event(_chunk(chunk_id, name, {"content": event[1]}))
                if event is None:
                    return
                if event[0] == "error":
                    self._event(event[1].body())
                else:
                    reply = event[1]
                    self._event(_chunk(chunk_id, name, {}, _finish_reason(reply)))
                    if job.include_usage:  # OpenAI's last chunk: no choices, the token counts
                        self._event({**_chunk(chunk_id, name, {}), "choices": [], "usage": _usage(reply, n_prompt)})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                job.cancel.set()  # the client hung up: stop generating for nobody
                log("client hung up; its generation is cancelled")

        def _event(self, body: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(body).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def _finish_reason(reply) -> str:
    return "length" if reply.finish_reason == "length" else "stop"


def _usage(reply, n_prompt: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": reply.n_tokens, "total_tokens": n_prompt + reply.n_tokens}


def _completion(name: str, message: dict, reply, n_prompt: int) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(reply)}],
        "usage": _usage(reply, n_prompt),
    }


def _chunk(chunk_id: str, name: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": name,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def context_tokens(model_dir) -> int:
    """The model's context window from its config.json (Gemma 3 270M: 32,768); 32,768 when it says nothing."""
    path = model_dir / "config.json" if model_dir else None
    config = json.loads(path.read_text()) if path and path.exists() else {}
    return int(config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
               or 32_768)  # fmt: skip


def make_api_server(
    model, tokenizer, model_dir, name: str, host: str = HOST, port: int = PORT, log=print, system: str | None = None
):
    """The server (not yet serving) and its generator; port 0 picks a free port. `system`: put first in every
    request without a system message (the one the model was trained with, system_message.py)."""
    from .special_tokens import stop_token_ids

    generator = Generator(model, tokenizer, stop_token_ids(model_dir, tokenizer), context_tokens(model_dir))
    handler = make_handler(name, generator, GenerationSettings(), log, system)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.generator = generator
    return server


def serve_api_in_thread(model, tokenizer, model_dir, name: str, log=lambda _: None, system: str | None = None):
    """Start the API on a free localhost port in a background thread (tests); returns (server, base_url)."""
    server = make_api_server(model, tokenizer, model_dir, name, port=0, log=log, system=system)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def run_api(model: str | None, adapter: str | None, name: str | None, host: str, port: int, dtype: str, log=print):
    """Load base (+ adapter) or a fused model and serve the API until Ctrl-C."""
    from pathlib import Path

    from .generation import load_for_generation
    from .system_message import served_system

    network, tokenizer, model_dir = load_for_generation(model, adapter, dtype, log=log)
    name = name or Path(adapter or model_dir).name
    system = served_system(adapter, model_dir)
    if system:
        log(f"requests without a system message get the one the model was trained with: {system[:60]}...")
    server = make_api_server(network, tokenizer, model_dir, name, host, port, log, system)
    log(f"OpenAI-compatible API for {name!r} on http://{host}:{server.server_address[1]}/v1 (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.generator.stop()
        server.server_close()
