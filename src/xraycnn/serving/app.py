"""MLflow's own model server (`mlflow.pyfunc.scoring_server.init`: /ping, /health, /version, /invocations)
over one model, with GET /model (its name, version, threshold and sites), behind a guard: a request body
over the size limit is refused (413) before it is read into memory or decoded, and a refused request's
message says what was wrong without echoing the request back.

`xraycnn serve` runs it under uvicorn (`from_environment` is the factory each worker process calls).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MODEL_ENV = "XRAYCNN_SERVE_MODEL"  # local folder of the MLflow model
CONFIG_ENV = "XRAYCNN_SERVE_CONFIG"  # JSON: model_version, model_name (the pyfunc model's model_config)
MAX_BYTES_ENV = "XRAYCNN_SERVE_MAX_BYTES"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app(model_path: str, model_config: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> ASGIApp:
    import mlflow
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(model_path, model_config=model_config or None)
    card = model.metadata.metadata or {}
    about = {
        "name": model_config.get("model_name") or None,
        "version": model_config.get("model_version") or None,
        "threshold": card.get("threshold"),
        "threshold_rule": card.get("threshold_rule"),
        "sites": model_config.get("sites") or {},
        "default_site": model_config.get("site") or None,
        "input_shape": card.get("input_shape"),
        "input_guard": card.get("input_guard"),  # None: a version registered before the guard
        "mlflow_version": mlflow.__version__,
    }
    return RequestGuard(scoring_server.init(model), max_bytes, about)


def from_environment() -> ASGIApp:
    return create_app(
        os.environ[MODEL_ENV],
        json.loads(os.environ.get(CONFIG_ENV) or "{}"),
        int(os.environ.get(MAX_BYTES_ENV) or DEFAULT_MAX_BYTES),
    )


MODEL_ROUTE = "/model"  # ours: which model answers (MLflow's /version is MLflow's version)


class RequestGuard:
    """ASGI middleware: the body-size limit, concise 4xx messages from /invocations, and GET /model."""

    def __init__(self, app: ASGIApp, max_bytes: int, about: dict[str, Any] | None = None) -> None:
        self.app, self.max_bytes, self.about = app, max_bytes, about or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == MODEL_ROUTE and scope.get("method") == "GET":
            await _send_json(send, 200, self.about)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if headers.get(b"expect", b"").lower() == b"100-continue":
                # The client waits for a "100 Continue" before sending the body (curl does, above 1 MB); it
                # never comes: the whole 413 goes out at once and the connection is closed.
                await _refuse_at_once(send, int(declared), self.max_bytes)
            else:
                await _refuse(send, receive, int(declared), self.max_bytes)
            return
        body, over = await _read_capped(receive, self.max_bytes)
        if over:
            await _refuse(send, receive, len(body), self.max_bytes, at_least=True)
            return
        await self.app(scope, _replay(body), _concise_errors(send))


async def _read_capped(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or as much as was read when it passed `limit` (then True)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
        if not message.get("more_body"):
            break
    return b"".join(chunks), False


async def _drain(receive: Receive) -> None:
    """Read the rest of a refused body and drop it (never held), so the client, still sending, gets the 413
    instead of a broken connection."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _too_large(size: int, limit: int, at_least: bool = False) -> dict[str, str]:
    message = (
        f"the request body is {'over ' if at_least else ''}{size:,} bytes; the limit is {limit:,} "
        "(send fewer images per request, or start the server with a larger --max-request-mb)"
    )
    return {"error_code": "REQUEST_TOO_LARGE", "message": message}


async def _refuse_at_once(send: Send, size: int, limit: int) -> None:
    start, body = _json_response(413, _too_large(size, limit))
    start["headers"] = [*start["headers"], (b"connection", b"close")]
    await send(start)
    await send(body)


async def _refuse(send: Send, receive: Receive, size: int, limit: int, at_least: bool = False) -> None:
    start, body = _json_response(413, _too_large(size, limit, at_least))
    await send(start)  # the status goes out before the rest of the body is read
    # Drained while the response is still open: once it is complete the server stops reading (uvicorn answers
    # `receive` with a disconnect) and closes, and a client still sending gets a broken pipe, not the 413.
    await _drain(receive)
    await send(body)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    for message in _json_response(status, payload):
        await send(message)


def _json_response(status: int, payload: dict[str, Any]) -> tuple[Message, Message]:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": status, "headers": headers}, {
        "type": "http.response.body",
        "body": body,
    }


MAX_MESSAGE = 500  # characters of a 4xx message: what went wrong, never the request sent back
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{64,}")  # base64 of an image, or any other blob quoted from a request


def concise(message: str) -> str:
    """What says why a request failed, without the request: MLflow prefixes a failed prediction's message with
    the whole input ("Failed to predict data '<the DataFrame>'", "Failed to enforce schema of data '...'")
    and quotes parts of malformed bodies; the prefix is dropped, quoted blobs are shortened and the message is
    capped at `MAX_MESSAGE` characters."""
    marker = "Error: "
    if message.startswith(("Failed to predict data", "Failed to enforce schema of data")) and marker in message:
        message = message.rsplit(marker, 1)[1].strip()
    message = _LONG_TOKEN.sub(lambda m: f"<{len(m.group())} characters>", message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 12] + " ... (cut)"


def _concise_errors(send: Send) -> Send:
    """Hold a 4xx response until its body is complete (MLflow's app streams it through its middleware), then
    send it with `concise` applied to its JSON message."""
    held: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        start, body = held, b"".join(chunks)
        held = None
        try:
            payload = json.loads(body or b"{}")
            payload["message"] = concise(str(payload.get("message", "")))
        except (ValueError, AttributeError, TypeError):
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await _send_json(send, start["status"], payload)

    return wrapped
