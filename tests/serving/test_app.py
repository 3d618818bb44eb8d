"""The request guard in front of MLflow's scoring server, as plain ASGI calls."""

from __future__ import annotations

import asyncio
import json

from xraycnn.serving.app import RequestGuard, concise


def _call(
    guard: RequestGuard,
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    method: str = "POST",
    path: str = "/invocations",
) -> tuple[int, dict, int]:
    """(status, JSON body, how many body chunks were read) of one POST through `guard`."""
    sent: list[dict] = []
    read = 0

    def response_complete() -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body") for m in sent)

    async def receive() -> dict:
        nonlocal read
        if read >= len(chunks) or response_complete():  # as uvicorn: a finished response ends the reading
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), read


async def _echo_size(scope, receive, send) -> None:
    """An app that answers with the size of the body it got, or MLflow's kind of 400."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if body == b"bad":
        payload = {"error_code": "BAD_REQUEST", "message": "Failed to predict data '  image\n0 b'...'. \nError: why"}
        content = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": content[:10], "more_body": True})  # streamed, as
        await send({"type": "http.response.body", "body": content[10:], "more_body": False})  # MLflow's is
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"size": len(body)}).encode()})


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    status, payload, _ = _call(RequestGuard(_echo_size, 10), [b"12345", b"67890"], [])
    assert (status, payload) == (200, {"size": 10})


def test_a_declared_length_over_the_limit_is_refused_before_the_app_sees_it() -> None:
    status, payload, _ = _call(RequestGuard(_echo_size, 10), [b"x" * 11], [(b"content-length", b"11")])
    assert status == 413 and payload["error_code"] == "REQUEST_TOO_LARGE"
    assert "11 bytes; the limit is 10" in payload["message"]


def test_an_undeclared_body_is_refused_once_it_passes_the_limit() -> None:
    chunks = [b"x" * 6] * 5
    status, payload, read = _call(RequestGuard(_echo_size, 10), chunks, [])
    assert status == 413 and "over 12 bytes" in payload["message"]
    assert read == len(chunks)  # the rest is drained, not held, so the client gets the answer


def test_a_refused_body_is_drained_before_the_response_ends() -> None:
    # Drained after the response, the server would have stopped reading: the client, still sending, would
    # get a broken pipe instead of the 413 (seen once in CI with a 32 MiB body).
    chunks = [b"x" * 6] * 5
    status, _, read = _call(RequestGuard(_echo_size, 10), chunks, [(b"content-length", b"30")])
    assert status == 413 and read == len(chunks)


def test_mlflow_s_messages_do_not_echo_the_request() -> None:
    status, payload, _ = _call(RequestGuard(_echo_size, 100), [b"bad"], [])
    assert (status, payload["message"], payload["error_code"]) == (400, "why", "BAD_REQUEST")
    assert concise("Schema mismatch") == "Schema mismatch"


def test_a_message_never_carries_a_blob_or_runs_long() -> None:
    blob = "iVBORw0KGgo" + "A" * 5000
    said = concise(f"Invalid input. Expected column 'image', got column 'x' with value '{blob}'")
    assert blob[:64] not in said and "<5011 characters>" in said
    assert len(concise("Unexpected token " + "{ x " * 10_000)) <= 500


def test_get_model_says_which_model_answers() -> None:
    about = {"name": "xraycnn", "version": "4", "threshold": 0.6}
    status, payload, _ = _call(RequestGuard(_echo_size, 10, about), [], [], method="GET", path="/model")
    assert (status, payload) == (200, about)
