"""Call an ASGI app in-process (no socket, no server): one request, the whole answer.

A stand-in for an HTTP client that speaks ASGI directly, so a test can send what a hostile
client sends (any header, a chunked body without Content-Length, bytes that are not JSON)::

    answer = call(app, "POST", "/recommend", body=b"{...}", headers={"content-type": ...})
    answer.status, answer.json(), answer.text
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


async def _call(
    app: Any, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> Answer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    pending = list(chunks) or [b""]
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await asyncio.sleep(3600)  # no disconnect while the app still answers
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    try:
        await app(scope, receive, send)
    except Exception:  # noqa: BLE001 - Starlette re-raises after sending the 500 answer
        if not messages:
            raise
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Answer(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start.get("headers", [])},
        body=body,
    )


def call(
    app: Any,
    method: str,
    path: str,
    body: bytes | None = None,
    chunks: Iterable[bytes] | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to ``app``. ``body`` is sent with its Content-Length; ``chunks`` are sent
    as a chunked body (no Content-Length); ``json_body`` is encoded as JSON. Headers default
    to a same-origin JSON request to ``127.0.0.1:8080``."""
    sent = {"host": "127.0.0.1:8080"}
    parts: list[bytes] = []
    if json_body is not None:
        body = json.dumps(json_body).encode()
    if body is not None:
        sent["content-type"] = "application/json"
        sent["content-length"] = str(len(body))
        parts = [body]
    elif chunks is not None:
        sent["content-type"] = "application/json"
        sent["transfer-encoding"] = "chunked"
        parts = list(chunks)
    sent.update(headers or {})
    sent = {k: v for k, v in sent.items() if v is not None}
    return asyncio.run(_call(app, method, path, sent, parts))
