"""Hostile HTTP callers: oversized, malformed and cross-site requests end in a JSON refusal
with the right status, echo nothing large back, and change nothing.

In-process (ASGI, no socket) over a registry whose versions load as fakes: every refusal
here happens before a model would run. Model answers (422 for a history that leaves
nothing, ``returned`` < k) are tested with a real server in tests/serving.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _asgi import Answer, call
from _serving_fakes import TOKEN, fake_service

from torchrec_recsys.errors import UserError
from torchrec_recsys.serving.http_guard import TOKEN_ENV, TOKEN_FILE, resolve_admin_token
from torchrec_recsys.serving.service import RecommendService

LIMIT = 16 * 1024
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, RecommendService]]:
    app, service = fake_service(tmp_path, monkeypatch, max_body_bytes=LIMIT)
    try:
        yield app, service
    finally:
        service.stop()


def _metric(app: Any, needle: str) -> float:
    text = call(app, "GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith(needle + " "):
            return float(line.split()[-1])
    return 0.0


def _refused(answer: Answer, status: int, *words: str) -> str:
    assert answer.status == status, (answer.status, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/json")
    message = answer.json()["error"]
    for word in words:
        assert word in message, message
    assert len(answer.body) < 600  # never an echo of the input
    return message


def _reached_endpoint(app: Any) -> float:
    """Bodies the recommend endpoint parsed (any outcome but a refusal before parsing)."""
    return sum(
        _metric(app, f'recsys_errors_total{{reason="{r}"}}')
        for r in ("malformed_json", "invalid_request", "no_live_version", "internal")
    )


# --- body size ---------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(served) -> None:  # type: ignore[no-untyped-def]
    app, _ = served
    big = b'{"user_id": "' + b"x" * (10 * LIMIT) + b'", "k": 3}'
    _refused(call(app, "POST", "/recommend", body=big), 413, f"larger than {LIMIT} bytes")
    chunked = call(app, "POST", "/recommend", chunks=[b"{" + b" " * 8000] * 3)  # no length
    _refused(chunked, 413, f"larger than {LIMIT} bytes")
    lying = call(app, "POST", "/recommend", body=big, headers={"content-length": "10"})
    _refused(lying, 413)  # a Content-Length that lies is no way past the limit
    assert _reached_endpoint(app) == 0
    assert _metric(app, 'recsys_errors_total{reason="body_too_large"}') == 3
    assert _metric(app, 'recsys_requests_total{endpoint="/recommend",status="413"}') == 3
    _refused(call(app, "POST", "/recommend", body=b"{}", headers={"content-length": "x"}), 400)
    # a body at the limit is read (and answered on its content)
    at_limit = b'{"k": 3, "pad": "' + b"p" * (LIMIT - 19) + b'"}'
    assert len(at_limit) == LIMIT
    _refused(call(app, "POST", "/recommend", body=at_limit), 422, "'pad'")


def test_the_body_limit_holds_for_every_path(served) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    body = b"x" * (LIMIT + 1)
    for path in ("/drift/reset", "/nowhere", "/healthz"):
        _refused(call(app, "POST", path, body=body, headers=AUTH), 413)
    assert service.store.routing.live.drift.resets == 0  # type: ignore[union-attr]
    text = call(app, "GET", "/metrics").text
    assert "/nowhere" not in text  # attacker paths never become metric labels


# --- JSON ----------------------------------------------------------------------------------

HOSTILE_JSON = {
    "lone surrogate": (b'{"user_id": "\\ud800", "k": 3}', "lone surrogate"),
    "surrogate key": (b'{"\\udfff": 1, "user_id": "u1"}', "lone surrogate"),
    "deep nesting": (b'{"user_id": "u1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    "very deep nesting": (b"[" * 8000 + b"]" * 8000, "nested"),
    "truncated": (b'{"user_id": "u1",', "not valid JSON"),
    "not utf-8": (b'{"user_id": "\xff\xfe"}', "not UTF-8"),
    "NaN": (b'{"user_id": "u1", "k": NaN}', "NaN"),
    "huge number": (b'{"user_id": "u1", "k": ' + b"9" * 5000 + b"}", "not valid JSON"),
    "empty": (b"", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_malformed_or_hostile_json_is_a_400_json_answer(served, case: str) -> None:  # type: ignore[no-untyped-def]
    app, _ = served
    body, word = HOSTILE_JSON[case]
    assert len(body) <= LIMIT
    _refused(call(app, "POST", "/recommend", body=body), 400, word)
    assert _metric(app, 'recsys_errors_total{reason="internal"}') == 0


def test_deep_nesting_within_the_limit_is_refused_not_crashed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch)  # the default 64 KiB limit
    try:
        for depth in (20, 30_000):
            body = b'{"user_id": "u1", "x": ' + b"[" * depth + b"]" * depth + b"}"
            _refused(call(app, "POST", "/recommend", body=body), 400, "nested deeper")
    finally:
        service.stop()


WRONG_TYPES = {
    "user_id a number": ({"user_id": 5, "k": 3}, "'user_id'"),
    "k a string": ({"user_id": "u1", "k": "3"}, "'k'"),
    "k a float": ({"user_id": "u1", "k": 3.0}, "'k'"),
    "k a bool": ({"user_id": "u1", "k": True}, "'k'"),
    "history a string": ({"user_id": "u1", "history": "i1"}, "'history'"),
    "history of numbers": ({"user_id": "u1", "history": [1, 2]}, "'history.0'"),
    "a list": ([1, 2], "JSON object"),
    "null": (None, "JSON object"),
    "control character": ({"user_id": "u\n1"}, "'user_id'"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_wrong_types_are_a_422_json_answer(served, case: str) -> None:  # type: ignore[no-untyped-def]
    app, _ = served
    payload, word = WRONG_TYPES[case]
    body = b"null" if payload is None else None
    _refused(call(app, "POST", "/recommend", body=body, json_body=payload), 422, word)


def test_no_answer_echoes_a_large_input(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch)
    try:
        key = "k" * 30_000
        for payload in (
            {"user_id": "u" * 30_000, "k": 3},
            {"user_id": "u1", key: 1},
            {"user_id": "u1", "history": ["i" * 5000] * 10},
            {"user_id": "u1", "k": int("9" * 4000)},
        ):
            answer = call(app, "POST", "/recommend", json_body=payload)
            assert answer.status == 422 and len(answer.body) < 600, answer.text[:200]
    finally:
        service.stop()


def test_an_unexpected_error_is_a_json_500(served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = served

    def boom() -> None:
        raise RuntimeError("something internal")

    monkeypatch.setattr(service, "drift", boom)
    answer = call(app, "GET", "/drift")
    assert answer.status == 500 and answer.json() == {"error": "internal error: RuntimeError"}


# --- origins, content types, token ---------------------------------------------------------

CROSS_SITE = {
    "foreign origin": ({"origin": "http://evil.example"}, 403, "Origin"),
    "null origin": ({"origin": "null"}, 403, "Origin"),
    "foreign port": ({"origin": "http://127.0.0.1:9999"}, 403, "Origin"),
    "foreign host": ({"host": "evil.example"}, 403, "Host"),
    "rebound host": ({"host": "attacker.test:8080"}, 403, "Host"),
    "malformed host": ({"host": "127.0.0.1:notaport"}, 403, "Host"),
    "cross-site fetch": ({"sec-fetch-site": "cross-site"}, 403, "cross-site"),
    "text/plain": ({"content-type": "text/plain"}, 415, "application/json"),
    "form": ({"content-type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    "no content type": ({"content-type": None}, 415, "application/json"),
}


@pytest.mark.parametrize("case", sorted(CROSS_SITE))
def test_cross_site_state_changes_are_refused(served, case: str) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    headers, status, word = CROSS_SITE[case]
    drift = service.store.routing.live.drift  # type: ignore[union-attr]
    answer = call(app, "POST", "/drift/reset", body=b"{}", headers={**AUTH, **headers})
    _refused(answer, status, word)
    answer = call(app, "POST", "/recommend", json_body={"user_id": "u1"}, headers=headers)
    _refused(answer, status, word)
    assert drift.resets == 0 and _reached_endpoint(app) == 0


def test_drift_reset_needs_the_token(served) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    drift = service.store.routing.live.drift  # type: ignore[union-attr]
    answer = call(app, "POST", "/drift/reset")
    _refused(answer, 401, "Authorization: Bearer")
    assert answer.headers.get("www-authenticate") == "Bearer"
    for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer \xe9"):
        _refused(call(app, "POST", "/drift/reset", headers={"authorization": wrong}), 403)
    assert drift.resets == 0
    same_origin = {**AUTH, "origin": "http://127.0.0.1:8080", "sec-fetch-site": "same-origin"}
    for headers in (AUTH, same_origin):
        answer = call(app, "POST", "/drift/reset", headers=headers)
        assert answer.status == 200 and answer.json() == {"reset": True}
    assert drift.resets == 2
    assert _metric(app, 'recsys_errors_total{reason="bad_token"}') == 4


def test_an_allowed_host_name_is_accepted(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch, allowed_hosts=("recsys.internal",))
    try:
        headers = {**AUTH, "host": "recsys.internal:8080"}
        assert call(app, "POST", "/drift/reset", headers=headers).status == 200
        headers["host"] = "other.internal:8080"
        _refused(call(app, "POST", "/drift/reset", headers=headers), 403, "Host")
    finally:
        service.stop()


def test_the_token_file_is_private_and_printed_nowhere(
    tmp_path, monkeypatch, capsys, caplog
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token = resolve_admin_token(tmp_path / "logs")
    path = tmp_path / "logs" / TOKEN_FILE
    assert path.read_text().strip() == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "logs")) == [TOKEN_FILE]  # no staging file left
    again = resolve_admin_token(tmp_path / "logs")
    assert again != token and stat.S_IMODE(path.stat().st_mode) == 0o600
    out = capsys.readouterr()
    assert token not in out.out + out.err and again not in caplog.text
    monkeypatch.setenv(TOKEN_ENV, "  from-the-environment-0123  ")
    assert resolve_admin_token(tmp_path / "elsewhere") == "from-the-environment-0123"
    assert not (tmp_path / "elsewhere").exists()  # an environment token writes no file
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(UserError, match=f"{TOKEN_ENV} holds 5 characters; expected at least 16"):
        resolve_admin_token(tmp_path / "x")


def test_the_service_writes_its_token_file_at_start(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch)
    service.stop()
    monkeypatch.delenv(TOKEN_ENV)
    from torchrec_recsys.serving.service import ServiceConfig, create_app

    app = create_app(ServiceConfig(registry=tmp_path / "registry", log_dir=tmp_path / "own"))
    own: RecommendService = app.state.service
    own.start()
    try:
        token = (tmp_path / "own" / TOKEN_FILE).read_text().strip()
        assert call(app, "POST", "/drift/reset", headers=AUTH).status == 403
        good = {"authorization": f"Bearer {token}"}
        assert call(app, "POST", "/drift/reset", headers=good).status == 200
        assert token not in call(app, "GET", "/healthz").text + call(app, "GET", "/metrics").text
    finally:
        own.stop()


def test_each_request_limit_is_its_own_answer(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch, max_k=5, candidates=5, max_concurrency=1)
    try:
        for k in (0, -3, 6, 10**30):
            _refused(call(app, "POST", "/recommend", json_body={"user_id": "u1", "k": k}), 422)
        ids = ["i"] * 1001
        _refused(
            call(app, "POST", "/recommend", json_body={"user_id": "u1", "history": ids}),
            422,
            "'history'",
        )
        assert service.admission.admit()  # one request in flight: the bound is reached
        answer = call(app, "POST", "/recommend", json_body={"user_id": "u1", "k": 3})
        _refused(answer, 503, "overloaded")
        service.admission.release()
        assert service.admission.inflight == 0
        service.store.routing = type(service.store.routing)(generation=0, live=None, live_name=None)
        answer = call(app, "POST", "/recommend", json_body={"user_id": "u1", "k": 3})
        _refused(answer, 503, "no live version")
        assert service.admission.inflight == 0  # released on every way out
    finally:
        service.stop()
