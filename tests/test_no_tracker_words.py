"""The product speaks of what it does: no tracker numbers, no word of who did the work.

README.md, docs/, the package, tests, configs, benchmarks, launch, examples and scripts are
read (text files: .py .md .toml .yml .yaml .txt .sh) and every line is matched against
:data:`PATTERNS`: a tracker's issue or item numbers, and words about working arrangements.
Links to upstream projects' issue trackers (:data:`ALLOWED_LINKS`) are removed from a line
before it is matched. Result reports (``results/``, ``benchmarks/results/``, ``reports/``)
are not read: they are dated records, kept as written; nor is this file (its patterns).

The checker is shown to fail on a planted file (the last test).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREES = ("docs", "torchrec_recsys", "tests", "configs", "benchmarks", "launch", "examples")
TREES += ("scripts",)
FILES = ("README.md", "mkdocs.yml")
SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".sh"}
SKIPPED = ("results", "benchmarks/results", "reports")
"""Folders (relative to the repo) that are not read."""

PATTERNS = {
    "issue number": r"\bissues? ?(no\.? ?)?#? ?\d+",
    "numbered item in parentheses": r"\(items? \d+[a-z]?\d?\)",
    "item number with a letter": r"\bitems? \d+ ?[a-z]\d?\b(?![-'])",
    "the issue": r"\bthe issue(?:'s)?\b",
    "other agents": r"\b(?:other|another|five|5) agents?\b",
    "lent machine": r"\b(?:lent|borrowed)\b",
    "helper": r"\bhelpers? (?:session|agent|worker)s?\b|\bthe helper\b",
    "session": r"\b(?:one|this|that|each|a|my|our) session\b",
    "first person": r"\b(?:of mine|my (?:own )?(?:commands?|runs?|jobs?|timeout))\b",
}
"""Name -> regex (case-insensitive) of a word that belongs to the tracker, not the product."""

ALLOWED_LINKS = re.compile(
    r"https?://github\.com/"
    r"(?:pytorch/(?:torchrec|pytorch|torchx|FBGEMM)|Kludex/uvicorn|encode/uvicorn"
    r"|facebookresearch/faiss|huggingface/transformers)/(?:issues|pull)/\d+"
)
"""Links to upstream projects' issues and pull requests (cited, not ours)."""

_COMPILED = {name: re.compile(rx, re.IGNORECASE) for name, rx in PATTERNS.items()}


def tracker_words(path: Path) -> list[str]:
    """``"path:line: <pattern name>: <line>"`` for every line of ``path`` with a tracker word."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        bare = ALLOWED_LINKS.sub("", line)
        for name, rx in _COMPILED.items():
            if rx.search(bare):
                found.append(f"{path}:{number}: {name}: {line.strip()[:120]}")
    return found


def product_files(root: Path = REPO) -> list[Path]:
    """The text files the check reads under ``root``."""
    skipped = [root / s for s in SKIPPED]
    files = [root / f for f in FILES if (root / f).is_file()]
    for tree in TREES:
        for path in sorted((root / tree).rglob("*")):
            if not path.is_file() or path.suffix not in SUFFIXES:
                continue
            if any(path.is_relative_to(s) for s in skipped) or "__pycache__" in path.parts:
                continue
            if path == Path(__file__).resolve():  # its own patterns and planted lines
                continue
            files.append(path)
    return files


def check(root: Path = REPO) -> list[str]:
    """Every tracker word in the product files under ``root``."""
    return [hit for path in product_files(root) for hit in tracker_words(path)]


def test_product_files_hold_no_tracker_words() -> None:
    files = product_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50
    hits = check()
    assert not hits, "tracker words in the product:\n" + "\n".join(hits)


def test_the_check_reports_a_planted_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    planted = {
        "docs/page.md": "Fixed for " + "issue #" + "12.",
        "docs/other.md": "Criteo input (" + "item " + "4)",
        "README.md": "measured on a machine " + "lent" + " to us",
        "docs/x.py": "# see " + "item " + "8b for the benchmark",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(f"A clean line.\n{text}\n")
    (tmp_path / "docs" / "clean.md").write_text(
        "item 4 was rated 2; items 1 and 5; see https://github.com/pytorch/torchrec/issues/575\n"
    )
    (tmp_path / "benchmarks" / "results" / "old.md").write_text("issue " + "13\n")
    hits = check(tmp_path)
    assert sorted({h.split(":")[0] for h in hits}) == sorted(str(tmp_path / n) for n in planted)
    assert all(":2: " in h for h in hits), hits
