"""What the service checks before a request reaches an endpoint: size, JSON, origin, token.

    every request  -> BodyLimit (ASGI): more than ``max_body_bytes`` -> 413, decided from
                      Content-Length before reading, or while reading a chunked body; the
                      endpoint never sees a part of a refused body
    every POST     -> check_same_origin: Host a loopback name, the bound host or an allowed
                      one; no foreign Origin, no cross-site Sec-Fetch-Site (403); a body of
                      Content-Type application/json only (415)
    state-changing -> check_token: ``Authorization: Bearer <token>`` (401 without, 403 wrong)
    JSON bodies    -> parse_json: UTF-8, strict JSON (no NaN), at most ``MAX_JSON_DEPTH``
                      levels, no lone surrogate in any string (400)

The admin token comes from ``TOKEN_ENV`` or, without it, a new random one is written at start
to ``<log dir>/admin.token`` with mode 0600 (never printed or logged).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from torchrec_recsys.errors import UserError

DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""Largest request body (bytes) by default; a recommend request needs well under 1 KiB."""
DRAIN_BYTES = 32 * 1024 * 1024
"""A refused body up to this size is read to its end (and discarded) before the 413 is
sent, so that a client still sending it gets the answer instead of a connection reset."""
DRAIN_SECONDS = 10.0
MAX_JSON_DEPTH = 8
"""Nesting levels a request body may have (a recommend request has 2)."""
TOKEN_ENV = "TORCHREC_RECSYS_ADMIN_TOKEN"
"""Environment variable with the token of the state-changing endpoints (at least 16 chars)."""
TOKEN_FILE = "admin.token"
"""Written in the log folder (mode 0600) when ``TOKEN_ENV`` is not set."""
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


class HTTPProblem(Exception):
    """A request refused with ``status``: answered as ``{"error": message}`` and counted
    under ``reason`` (``recsys_errors_total``)."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


def short(value: Any, limit: int = 64) -> str:
    """``repr(value)`` cut to ``limit`` characters: what an answer may echo of an input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# ---------------------------------------------------------------------------- body size


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413 (JSON), whether it
    announces its length or arrives chunked; an accepted body is handed on whole.

    ``on_refuse(path, status, reason)`` is called for every refusal (metrics)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        on_refuse: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refuse = on_refuse

    async def _refuse(self, scope: Scope, send: Send, status: int, reason: str, text: str) -> None:
        if self.on_refuse is not None:
            self.on_refuse(scope.get("path", ""), status, reason)
        body = json.dumps({"error": text}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = (
            f"request body is larger than {self.max_bytes} bytes; expected a small JSON object"
        )
        lengths = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if lengths:
            try:
                declared = {int(v) for v in lengths}
            except ValueError:
                declared = {-1}
            if len(declared) != 1 or min(declared) < 0:
                await self._refuse(scope, send, 400, "bad_length", "invalid Content-Length")
                return
            length = declared.pop()
            if length > self.max_bytes:
                if length <= DRAIN_BYTES:
                    await _drain(receive, 0)
                await self._refuse(scope, send, 413, "body_too_large", too_large)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_bytes:
                if more:
                    await _drain(receive, size)
                await self._refuse(scope, send, 413, "body_too_large", too_large)
                return
            chunks.append(chunk)
            if not more:
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _drain(receive: Receive, received: int) -> None:
    """Read and discard the rest of a refused body (at most ``DRAIN_BYTES`` in all and
    ``DRAIN_SECONDS``), so the refusal reaches a client that is still sending."""
    with anyio.move_on_after(DRAIN_SECONDS):
        while received <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


# ---------------------------------------------------------------------------- JSON


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, example: str) -> Any:
    """The JSON value of a request body, or :class:`HTTPProblem` 400 naming what is wrong
    (``example``: what a good body looks like)."""

    def bad(why: str) -> HTTPProblem:
        return HTTPProblem(
            400, "malformed_json", f"request body is not valid JSON ({why}); expected {example}"
        )

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise bad(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, NaN, a number of too many digits
        raise bad(short(str(exc), 120).strip("'\"")) from None
    problem = _check_value(value)
    if problem:
        raise bad(problem)
    return value


def _check_value(value: Any) -> str | None:
    """Why a parsed JSON value is refused (too deep, a lone surrogate), or None."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            children = list(item.items()) if isinstance(item, dict) else item
            for child in children:
                if isinstance(item, dict):
                    key, child = child
                    stack.append((key, depth))
                stack.append((child, depth + 1))
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone surrogate (\\ud800-\\udfff); expected UTF-8 text"
    return None


# ---------------------------------------------------------------------------- origin


def _host_name(host_header: str) -> str | None:
    """The name in a Host header (``[::1]:8080`` -> ``::1``), lower case; None if malformed."""
    try:
        parts = urlsplit(f"//{host_header}")
        name = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    return name.lower() if name else None


def allowed_host_names(bind_host: str | None, extra: Collection[str]) -> frozenset[str]:
    """Host names a state-changing request may name: loopback, the bound one (unless it is
    the any-address), and ``extra``."""
    names = set(LOOPBACK_NAMES) | {_host_name(h) or h.lower() for h in extra if h}
    if bind_host:
        try:
            unspecified = ipaddress.ip_address(bind_host).is_unspecified
        except ValueError:
            unspecified = False
        if not unspecified:
            names.add(bind_host.lower())
    return frozenset(names)


def check_same_origin(request: Request, allowed_hosts: Collection[str]) -> None:
    """Refuse a POST a browser may have sent from another site (403) or that does not carry
    JSON (415): foreign Host (DNS rebinding), foreign Origin, cross-site Sec-Fetch-Site."""
    headers = request.headers
    host = headers.get("host", "")
    name = _host_name(host)
    if name is None or name not in allowed_hosts:
        raise HTTPProblem(
            403,
            "foreign_host",
            f"Host {short(host)} is not this server; expected one of "
            f"{', '.join(sorted(allowed_hosts))} (serve --allowed-host adds names)",
        )
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
            raise HTTPProblem(
                403,
                "cross_origin",
                f"Origin {short(origin)} is another site; state-changing requests are "
                "accepted from this origin only",
            )
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise HTTPProblem(
            403, "cross_origin", f"Sec-Fetch-Site {short(fetch_site)}: cross-site request refused"
        )
    content_type = headers.get("content-type")
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if content_type is None and not has_body:
        return
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HTTPProblem(
            415,
            "unsupported_media_type",
            f"Content-Type {short(content_type)} is not accepted; expected application/json",
        )


# ---------------------------------------------------------------------------- token


def resolve_admin_token(folder: Path) -> str:
    """The token of the state-changing endpoints: ``TOKEN_ENV`` if set, else a new random
    one written to ``folder / TOKEN_FILE`` (mode 0600, replacing an older one atomically).

    Raises:
        UserError: ``TOKEN_ENV`` is set but shorter than ``MIN_TOKEN_CHARS``, or the token
            file cannot be written.
    """
    token = os.environ.get(TOKEN_ENV)
    if token is not None:
        if len(token.strip()) < MIN_TOKEN_CHARS:
            raise UserError(
                f"{TOKEN_ENV} holds {len(token.strip())} characters; expected at least "
                f"{MIN_TOKEN_CHARS}"
            )
        return token.strip()
    token = secrets.token_urlsafe(32)
    path = Path(folder) / TOKEN_FILE
    staged = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.unlink(missing_ok=True)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from birth
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise UserError(f"cannot write the admin token file {str(path)!r} ({exc})") from None
    return token


def read_admin_token(folder: Path) -> str:
    """The token :func:`resolve_admin_token` gave (``TOKEN_ENV``, else the token file in
    ``folder``), for the worker processes of one server.

    Raises:
        UserError: neither gives a token of at least ``MIN_TOKEN_CHARS`` characters.
    """
    if os.environ.get(TOKEN_ENV) is not None:
        return resolve_admin_token(folder)
    path = Path(folder) / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"cannot read the admin token file {str(path)!r} ({exc})") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(
            f"admin token file {str(path)!r} holds {len(token)} characters; expected at least "
            f"{MIN_TOKEN_CHARS}"
        )
    return token


def check_token(request: Request, token: str) -> None:
    """Require ``Authorization: Bearer <token>``: 401 without one, 403 with a wrong one."""
    given = request.headers.get("authorization")
    if given is None:
        raise HTTPProblem(
            401,
            "no_token",
            f"this endpoint needs 'Authorization: Bearer <token>' (the token is in {TOKEN_ENV} "
            f"or the server's {TOKEN_FILE} file)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode("utf-8", "replace"), token.encode("utf-8")
    ):
        raise HTTPProblem(403, "bad_token", "the admin token is wrong")
