"""mkdocs hook (mkdocs.yml ``hooks:``): links from a page to files outside ``docs/``.

Pages link to reports and results that live beside ``docs/`` (``../results/README.md``,
``../reports/...``), so that the links work when the Markdown is read in the repository.
mkdocs only knows the files under ``docs_dir`` and would call every such link "not found".
This hook checks them itself, against the repository, before mkdocs sees the page: a link to a
file that does not exist is a warning (an error under ``strict``), and an existing one is
written as its text plus the repository path (the site does not serve files outside
``docs/``). Links between pages are left to mkdocs' own strict validation.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.outside_links")

LINK = re.compile(r"\[([^\]]+)\]\((?!https?:|mailto:|#)([^)\s]+)\)")
"""A Markdown inline link with a relative target: ``[text](target)``."""


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = docs_dir.parent
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        path = target.split("#", 1)[0]
        if not path:
            return match.group(0)
        resolved = (docs_dir / page_dir / path).resolve()
        if resolved.is_relative_to(docs_dir):
            return match.group(0)  # a page or file under docs/: mkdocs validates it
        relative = resolved.relative_to(repo).as_posix() if resolved.is_relative_to(repo) else None
        if relative is None or not resolved.exists():
            log.warning(
                "Doc file '%s' links to '%s', which is not a file of the repository",
                page.file.src_uri,
                target,
            )
            return match.group(0)
        return f"{text} (`{relative}`)"

    return LINK.sub(rewrite, markdown)
