"""``serve`` flags are checked before anything starts (one ``error:`` line, exit 2, nothing
loaded, bound or written); ``serve`` says one ready line once it answers, and over a real
socket a hostile body still gets its answer (not a connection reset); ``export-bundle
--out`` below a file is one line too.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from torchrec_recsys.cli import main as cli_main

BAD_FLAGS = {
    "workers 0": (["--workers", "0"], "--workers 0"),
    "workers -1": (["--workers", "-1"], "--workers -1"),
    "max concurrency 0": (["--max-concurrency", "0"], "--max-concurrency 0"),
    "poll seconds -1": (["--poll-seconds", "-1"], "--poll-seconds -1.0"),
    "poll seconds 0": (["--poll-seconds", "0"], "--poll-seconds 0.0"),
    "poll seconds nan": (["--poll-seconds", "nan"], "--poll-seconds nan"),
    "poll seconds inf": (["--poll-seconds", "inf"], "--poll-seconds inf"),
    "poll seconds 1e-9": (["--poll-seconds", "1e-9"], "--poll-seconds 1e-09"),
    "poll seconds 1e308": (["--poll-seconds", "1e308"], "--poll-seconds 1e+308"),
    "torch threads 0": (["--torch-threads", "0"], "--torch-threads 0"),
    "processes 0": (["--processes", "0"], "--processes 0"),
    "port 99999": (["--port", "99999"], "--port 99999"),
    "port -1": (["--port", "-1"], "--port -1"),
    "max k 0": (["--max-k", "0"], "--max-k 0"),
    "max k over candidates": (["--max-k", "200", "--candidates", "100"], "--max-k 200"),
    "candidates 0": (["--candidates", "0", "--max-k", "1"], "--candidates 0"),
    "drift window 0": (["--drift-window-seconds", "0"], "--drift-window-seconds 0.0"),
    "drift min requests 0": (["--drift-min-requests", "0"], "--drift-min-requests 0"),
    "psi threshold -1": (["--psi-threshold", "-1"], "--psi-threshold -1.0"),
    "max body bytes 0": (["--max-body-bytes", "0"], "--max-body-bytes 0"),
    "log dir a file": (["--log-dir", "{file}"], "is a file; expected a folder"),
    "log dir below a file": (["--log-dir", "{file}/logs"], "lies below the file"),
    "remote host": (["--host", "10.1.2.3"], "--allow-remote"),
}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    folder = tmp_path / "registry"
    folder.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    return folder


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_a_bad_serve_flag_is_one_line_and_starts_nothing(registry: Path, case: str, capsys) -> None:  # type: ignore[no-untyped-def]
    flags, expected = BAD_FLAGS[case]
    file = registry.parent / "a-file"
    flags = [f.replace("{file}", str(file)) for f in flags]
    before = _listing(registry.parent)
    assert cli_main(["serve", "--registry", str(registry), *flags]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert out == "" and _listing(registry.parent) == before  # no log dir, no token file


@pytest.mark.parametrize("what", ["missing", "a file"])
def test_a_registry_that_is_not_a_folder_is_one_line(tmp_path: Path, what: str, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "registry"
    if what == "a file":
        path.write_text("x")
    assert cli_main(["serve", "--registry", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    expected = "is not a folder" if what == "a file" else "does not exist"
    assert err.count("\n") == 0 and f"--registry '{path}' {expected}" in err


def test_workers_0_exits_at_once_instead_of_hanging(registry: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "torchrec_recsys", "serve", "--registry", str(registry),
         "--workers", "0", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "error: --workers 0 is invalid; expected an integer >= 1"


@pytest.mark.parametrize("below", [False, True])
def test_export_bundle_out_on_or_below_a_file_is_one_line(
    tmp_path: Path, below: bool, capsys
) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "a-file"
    file.write_text("keep me")
    out = file / "bundle" if below else file
    argv = ["export-bundle", "--retriever", str(tmp_path), "--ranker", str(tmp_path)]
    assert cli_main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--out '{out}'" in err
    assert ("lies below the file" if below else "is a file") in err
    assert file.read_text() == "keep me" and _listing(tmp_path) == ["a-file"]


def _post(
    port: int, body: bytes, headers: dict[str, str], chunked: bool = False
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked:  # no Content-Length: the size is known only while reading
            conn.putrequest("POST", "/recommend")
            for key, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(key, value)
            conn.endheaders()
            for i in range(0, len(body), 1 << 16):
                chunk = body[i : i + (1 << 16)]
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request("POST", "/recommend", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())["error"]
    finally:
        conn.close()


def test_serve_prints_one_ready_line_with_the_real_port(registry: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TORCHREC_RECSYS_ADMIN_TOKEN", None)
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "torchrec_recsys", "serve", "--registry", str(registry),
             "--port", "0", "--poll-seconds", "0.2"],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    token = ""
    try:
        try:
            line = lines.get(timeout=120)  # bounded
        except queue.Empty:
            pytest.fail(f"serve printed no ready line within 120 s: {log.read_text()[-2000:]}")
        found = re.fullmatch(r"serving \(no live version\) on http://127\.0\.0\.1:(\d+)\n", line)
        assert found, line
        port = int(found.group(1))
        assert port != 0
        with pytest.raises(urllib.error.HTTPError) as answer:  # it answers right away
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert answer.value.code == 503
        assert json.loads(answer.value.read())["status"] == "no_live_version"
        token = (registry / "logs" / "admin.token").read_text().strip()
        assert len(token) >= 32
        # a 10 MB body, with and without Content-Length: a 413 the client can read
        big = b'{"user_id": "' + b"x" * 10_000_000 + b'"}'
        json_type = {"Content-Type": "application/json"}
        for chunked in (False, True):
            status, error = _post(port, big, json_type, chunked)
            assert status == 413 and "larger than 65536 bytes" in error and len(error) < 200
        status, error = _post(port, b'{"user_id": "\\ud800"}', json_type)
        assert status == 400 and "lone surrogate" in error
        status, error = _post(port, b'{"user_id": "u1"}', {**json_type, "Host": "evil.test"})
        assert status == 403 and "Host" in error
        status, error = _post(port, b'{"user_id": "u1"}', {"Content-Type": "text/plain"})
        assert status == 415
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)
    assert lines.qsize() == 0  # one line on stdout
    assert token not in log.read_text()  # the token is printed nowhere
