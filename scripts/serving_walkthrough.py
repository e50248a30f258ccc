"""Run the serving walkthrough of docs/serving.md end to end, and write or check its output.

    python scripts/serving_walkthrough.py            # run every command, compare with the page
    python scripts/serving_walkthrough.py --write    # run every command, rewrite the page's block

Every command shown on the page is run here, as written, by ``bash`` in a fresh working
folder (tiny synthetic data, one epoch per model, so the whole walkthrough takes a few
minutes on 2 CPU cores); its output is what the page shows, between the markers
``<!-- BEGIN RECORDED: serving-walkthrough -->`` and ``<!-- END RECORDED: ... -->``. The
server is started on 127.0.0.1 only, on ``--port`` (18931 by default). Between commands the
script waits, with bounded loops, for the server to reach the registry's generation (the
server polls the registry) and for the shadow log to be written (shadow copies run after the
response); those waits are not shown. ``--check`` (the default) compares with the page after
masking what changes from run to run (request ids, latencies, times, load seconds) and
exits 1 on a difference; rerun with ``--write`` after a change of behaviour.
"""

from __future__ import annotations

import argparse
import difflib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "serving.md"
BEGIN = "<!-- BEGIN RECORDED: serving-walkthrough -->"
END = "<!-- END RECORDED: serving-walkthrough -->"
JSON = "-H 'Content-Type: application/json'"
TIMEOUT_S = 300
"""Longest any one command may run (training on a loaded machine included)."""


@dataclass(frozen=True)
class Step:
    command: str
    """Shell command, run by bash in the working folder (``$U`` = the server's base URL)."""
    code: int = 0
    """Expected exit status."""
    note: str = ""
    """A line of prose shown before the command (as a shell comment)."""
    wait: str = ""
    """After the command: ``generation`` (server at the registry's generation), ``shadow:N``
    (N shadow records written), or empty."""
    background: bool = False
    """Start the command and keep it running (the server)."""


def steps(port: int) -> list[Step]:
    recommend = f"curl -s -X POST $U/recommend {JSON}"
    return [
        Step("python -m torchrec_recsys synth --out data/synthetic", note="tiny data"),
        Step(
            "python -m torchrec_recsys train --config configs/tiny_synthetic.toml "
            "--model.name=two_tower --train.epochs=1 --run-dir runs/two_tower | tail -n 1",
            note="a retriever and a ranker, one epoch each",
        ),
        Step(
            "python -m torchrec_recsys train --config configs/tiny_synthetic.toml "
            "--train.epochs=1 --run-dir runs/dlrm | tail -n 1"
        ),
        Step(
            "python -m torchrec_recsys export-bundle --retriever runs/two_tower "
            "--ranker runs/dlrm --out bundles/fp32"
        ),
        Step(
            "python -m torchrec_recsys export-bundle --retriever runs/two_tower "
            "--ranker runs/dlrm --out bundles/int8 --quantize int8"
        ),
        Step(
            "cp -r bundles/fp32 bundles/broken && printf 'xyz' | "
            "dd of=bundles/broken/ranker/model.pt bs=1 seek=100 conv=notrunc status=none",
            note="a bundle with three bytes changed is refused, naming the file",
        ),
        Step("python -m torchrec_recsys registry --root registry add bundles/broken", code=2),
        Step("python -m torchrec_recsys registry --root registry add bundles/fp32"),
        Step("python -m torchrec_recsys registry --root registry add bundles/int8"),
        Step("python -m torchrec_recsys registry --root registry promote v1"),
        Step(
            f"python -m torchrec_recsys serve --registry registry --port {port} > serve.log 2>&1 &",
            background=True,
            wait="generation",
            note=f"U=http://127.0.0.1:{port} from here on",
        ),
        Step(f'{recommend} -d \'{{"user_id": "u1", "k": 3}}\''),
        Step(
            f'{recommend} -d \'{{"user_id": "new-visitor", "k": 3, '
            f'"history": ["i3", "i5", "not-an-item"]}}\'',
            note="an unknown user with a history: cold start; unknown items are listed",
        ),
        Step(f'{recommend} -d \'{{"user_id": "u1", "k": 0}}\'', note="refused requests"),
        Step(f'{recommend} -d \'{{"user_id": "u1", "k": \''),
        Step(f"{recommend} -d '{{\"user_id\": 1}}'"),
        Step('curl -s -X POST $U/recommend -d \'{"user_id": "u1", "k": 3}\''),
        Step(f"{recommend} -H 'Origin: http://elsewhere.example' -d '{{\"user_id\": \"u1\"}}'"),
        Step(
            "head -c 70000 /dev/zero | tr '\\0' ' ' | "
            f"curl -s -X POST $U/recommend {JSON} --data-binary @-"
        ),
        Step(
            "python -m torchrec_recsys registry --root registry canary v2 --share 0.2",
            wait="generation",
            note="a 20% canary, then 200 users",
        ),
        Step(
            "for u in $(seq 0 199); do "
            f'{recommend} -d "{{\\"user_id\\": \\"u$u\\", \\"k\\": 5}}"; echo; done '
            '| grep -o \'"version":"v[0-9]"\' | sort | uniq -c'
        ),
        Step("python -m torchrec_recsys registry --root registry canary --off", wait="generation"),
        Step(
            "python -m torchrec_recsys registry --root registry shadow v2",
            wait="generation",
            note="the int8 version shadows 60 requests",
        ),
        Step(
            "for u in $(seq 0 59); do "
            f'{recommend} -d "{{\\"user_id\\": \\"u$u\\", \\"k\\": 5}}" '
            "> /dev/null; done",
            wait="shadow:60",
        ),
        Step(
            'python -c "import json; '
            "r = [json.loads(x) for x in open('registry/logs/shadow.jsonl')]; "
            "print(len(r), 'records, mean top-k overlap', "
            "round(sum(x['topk_overlap'] for x in r) / len(r), 3))\""
        ),
        Step("python -m torchrec_recsys registry --root registry shadow --off", wait="generation"),
        Step(
            "for u in $(seq 1 100); do "
            f'{recommend} -d "{{\\"user_id\\": \\"visitor$u\\", \\"k\\": 5, '
            '\\"history\\": [\\"i299\\"]}" > /dev/null; done',
            note="a shifted stream: 100 new users whose history is one rare item",
        ),
        Step("python -m torchrec_recsys drift --url $U 2>&1"),
        Step(
            "curl -s -X POST $U/drift/reset",
            note="state-changing endpoints need the admin token (here from its file)",
        ),
        Step(
            "curl -s -X POST $U/drift/reset "
            '-H "Authorization: Bearer $(cat registry/logs/admin.token)"'
        ),
        Step(
            "python -m torchrec_recsys registry --root registry promote v2",
            wait="generation",
            note="promote, then roll back",
        ),
        Step("curl -s $U/healthz"),
        Step("python -m torchrec_recsys registry --root registry rollback", wait="generation"),
        Step("curl -s $U/healthz"),
        Step("python -m torchrec_recsys registry --root registry list"),
        Step(
            "curl -s $U/metrics | grep -E "
            "'^recsys_(requests_total|errors_total|version_requests_total)'",
            note="metrics, the impression log, the API description",
        ),
        Step("head -n 3 registry/logs/impressions-*.csv"),
        Step("curl -s -o /dev/null -w '%{http_code} %{content_type}\\n' $U/docs"),
        Step(
            'curl -s $U/openapi.json | python -c "import json, sys; d = json.load(sys.stdin); '
            "print(d['info']['title'], sorted(d['paths']))\""
        ),
        Step(
            "grep -E 'loaded version|serving generation' serve.log",
            note="the server's log: each registry change applied without a restart",
        ),
    ]


def _health(port: int) -> dict[str, object] | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body
    except (OSError, ValueError):
        return None


def _wait(what: str, port: int, work: Path, server: subprocess.Popen[bytes] | None) -> None:
    """Block (at most 120 s) until ``what`` holds; raise if it never does."""
    deadline = time.monotonic() + 120
    state_file = work / "registry" / "state.json"
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited: {(work / 'serve.log').read_text()[-3000:]}")
        if what == "generation":
            wanted = json.loads(state_file.read_text())["generation"]
            health = _health(port)
            if health is not None and health.get("generation") == wanted:
                return
        elif what.startswith("shadow:"):
            log = work / "registry" / "logs" / "shadow.jsonl"
            if log.is_file() and len(log.read_text().splitlines()) >= int(what.split(":")[1]):
                return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def run(port: int, work: Path) -> str:
    """Run every step in ``work``; the page's block (commands and their output)."""
    (work / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "tiny_synthetic.toml", work / "configs")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "U": f"http://127.0.0.1:{port}",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("TORCHREC_RECSYS_ADMIN_TOKEN", None)  # the server writes its token file
    env.pop("TORCHREC_RECSYS_BUNDLE_KEY", None)
    lines = ["```"]
    server = None
    try:
        for step in steps(port):
            if step.note:
                lines.append(f"# {step.note}")
            lines.append(f"$ {step.command}")
            print(f"$ {step.command}", file=sys.stderr, flush=True)
            if step.background:
                server = subprocess.Popen(
                    ["bash", "-c", "exec " + step.command.removesuffix("&").strip()],
                    cwd=work,
                    env=env,
                )
            else:
                done = subprocess.run(
                    ["bash", "-c", step.command],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT_S,
                )
                if done.returncode != step.code:
                    raise SystemExit(
                        f"exit {done.returncode}, expected {step.code}:\n"
                        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                    )
                output = (done.stdout + done.stderr).rstrip("\n")
                if output:
                    lines.extend(output.splitlines())
            if step.wait:
                _wait(step.wait, port, work, server)
            lines.append("")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    while lines[-1] == "":
        lines.pop()
    lines.append("```")
    return "\n".join(lines)


VOLATILE = [
    (r"[0-9a-f]{32}", "<id>"),
    (r"(latency_ms\"?:\s*)[0-9.e+-]+", r"\1<ms>"),
    (r"(\"time\":\s*)[0-9.e+-]+", r"\1<t>"),
    (r"(\"process\":\s*)\d+", r"\1<pid>"),
    (r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+", "<time>"),
    (r",\d{9,}\.\d+,", ",<t>,"),
    (r"in \d+\.\d+ s\b", "in <s> s"),
    (r"impressions-[^ :]*\.csv", "impressions-<n>.csv"),
]


def masked(text: str) -> str:
    """``text`` without what differs from run to run."""
    for pattern, replacement in VOLATILE:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def page_block(page: str) -> tuple[int, int]:
    """Start and end offsets of the generated block's content in ``page``."""
    begin, end = page.find(BEGIN), page.find(END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{PAGE} lacks the markers {BEGIN!r} ... {END!r}")
    return begin + len(BEGIN), end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the page's block")
    parser.add_argument("--port", type=int, default=18931, help="server port on 127.0.0.1")
    parser.add_argument("--workdir", help="working folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="serving_walkthrough_"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--workdir {str(work)!r} is not empty; expected a new folder")
    started = time.monotonic()
    block = run(args.port, work)
    print(f"walkthrough ran in {time.monotonic() - started:.0f} s in {work}", file=sys.stderr)
    page = PAGE.read_text()
    begin, end = page_block(page)
    if args.write:
        PAGE.write_text(page[:begin] + "\n" + block + "\n" + page[end:])
        print(f"wrote {PAGE}", file=sys.stderr)
        return 0
    old = masked(page[begin:end].strip("\n"))
    new = masked(block)
    if old != new:
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), "docs/serving.md", "this run"
            )
        )
        print("\nthe walkthrough's output changed; rerun with --write", file=sys.stderr)
        return 1
    print("docs/serving.md matches this run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
