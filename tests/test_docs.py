"""The documentation holds together: every relative link and ``#anchor`` in
README.md and docs/ resolves inside the repository, the API reference's route
table names exactly the routes of openapi.json, the README stays a first read,
and nothing points at files outside the repository."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "tests" / "README.md"]
API_DOC = REPO / "docs" / "api.md"
OPENAPI = REPO / "vidproxy" / "web" / "openapi.json"
# The README is what a user reads first; the reference lives in docs/.
README_MAX_LINES = 250
HTTP_METHODS = {"get", "put", "post", "delete", "head", "patch", "options"}

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title".
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The text without fenced blocks and code spans, where nothing is a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return _LINK.findall(prose(path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces
    to hyphens (code spans keep their text, links their label)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, with GitHub's ``-1``, ``-2`` for repeats."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken(path: Path, target: str) -> str | None:
    """Why ``target``, linked from ``path``, does not resolve; None if it does."""
    if _SCHEME.match(target) or target.startswith("//"):
        return None  # an absolute URL: not this repository's business
    file_part, _, anchor = target.partition("#")
    linked = (path.parent / file_part).resolve() if file_part else path
    if not linked.is_relative_to(REPO):
        return "points outside the repository"
    if not linked.exists():
        return "no such file"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
        return f"no heading with anchor #{anchor} in {linked.relative_to(REPO)}"
    return None


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = [f"{target}: {why}" for target in links(doc) if (why := broken(doc, target))]
    assert problems == []


def test_the_link_checker_sees_a_broken_link_and_a_broken_anchor(tmp_path: Path) -> None:
    # The check itself can fail: a missing file, a missing anchor, a way out.
    page = REPO / "docs" / "api.md"
    assert broken(page, "no-such-file.md") == "no such file"
    assert broken(page, "#no-such-heading") is not None
    assert broken(page, "../../outside.md") == "points outside the repository"
    assert broken(page, "#errors") is None
    assert broken(page, "https://example.com/x.md#y") is None
    assert links_in_text("see `[not](a-link.md)` and [a](b.md#c)") == ["b.md#c"]


def links_in_text(text: str) -> list[str]:
    return _LINK.findall(prose(text))


def test_slugs_follow_github() -> None:
    assert slug("S3 backends: AWS S3, MinIO, Ceph, R2, rclone, moto") == (
        "s3-backends-aws-s3-minio-ceph-r2-rclone-moto"
    )
    assert slug("The /upload and /download aliases") == "the-upload-and-download-aliases"
    assert slug("`vidproxy verify`") == "vidproxy-verify"


def documented_routes() -> set[tuple[str, str]]:
    """(method, path) for each row of the route table that opens docs/api.md."""
    text = API_DOC.read_text(encoding="utf-8")
    table = text[text.index("| Method | Path |") :].split("\n\n", 1)[0]
    routes: set[tuple[str, str]] = set()
    for row in table.splitlines()[2:]:
        methods, path = (cell.strip() for cell in row.strip("|").split("|")[:2])
        path = path.strip("`").split("?", 1)[0]
        routes |= {(m.lower(), path) for m in re.findall(r"`([A-Z]+)`", methods)}
    return routes


def openapi_routes() -> set[tuple[str, str]]:
    paths = json.loads(OPENAPI.read_text(encoding="utf-8"))["paths"]
    return {(m, path) for path, item in paths.items() for m in item if m in HTTP_METHODS}


def test_the_api_reference_names_every_route_of_the_openapi_document() -> None:
    assert openapi_routes() - documented_routes() == set()


def test_the_api_reference_names_no_route_the_openapi_document_lacks() -> None:
    assert documented_routes() - openapi_routes() == set()


def test_the_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference text to docs/"


# The steering files that sit beside the repository on a developer's machine:
# users do not have them, so nothing in the project may name them.
OUTSIDE_NAMES = ("../" + "shared/", "FIELD" + "-NOTES", "STYLE" + ".md")


def test_nothing_refers_to_files_outside_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    found = []
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (the page's screenshot, the bench chart)
        found += [f"{name}: {word}" for word in OUTSIDE_NAMES if word in text]
    assert found == []
