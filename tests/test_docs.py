"""The documentation keeps its shape: a short README that starts a newcomer, reference pages under docs/ that
link to each other without dead ends, and code that points at pages that exist.

Why a test: links and anchors rot silently when a heading is renamed or a page moves, and a README grows back
to thousands of lines one paragraph at a time. These checks read files only (no network, no lab).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The README must stay a front page; the reference lives in docs/.
README_MAX_LINES = 300
#: The two commands a fresh machine needs, each with the script it runs.
FRESH_MACHINE_COMMANDS = ("bash scripts/demo.sh", "bash scripts/setup-and-test.sh")
#: How the making of the project (rather than the project) leaks into its pages.
MAKING_OF = [
    re.compile(r"\bQA\b"),
    re.compile(r"\bengineers?\b", re.IGNORECASE),
    re.compile(r"\bthe team\b", re.IGNORECASE),
    re.compile(r"\b(?:this|that|previous|earlier|later|next|work|working|coding|chat) session\b", re.IGNORECASE),
    re.compile(r"\bsession (?:log|notes?)\b", re.IGNORECASE),
    re.compile(r"\bfiled by\b", re.IGNORECASE),
    re.compile(r"\bthe (?:issue|ticket)(?:'s)?\b", re.IGNORECASE),
    re.compile(r"\*\*Status:", re.IGNORECASE),
]
#: Markdown link target: [text](target), the target without spaces (titles are not used here).
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
#: A source file's pointer at a docs page: docs/<name>.md, optionally with #anchor.
DOCS_POINTER = re.compile(r"\bdocs/([\w.-]+\.md)(#[\w-]+)?")
#: The old form of pointer, a section of the README or "see the README" (reference sections have moved to docs/).
README_SECTION = re.compile(r"README'?s? (\"[^\"]+\"|[\w -]+?) section|see the README\b")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, line for line (code lines become empty)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else INLINE_CODE.sub("", line))
    return "\n".join(out)


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub, mkdocs' toc with the GitHub slugger) gives a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a page, duplicates numbered as GitHub does (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def relative_links(path: Path) -> list[tuple[str, int]]:
    """(target, line number) of every link that is not a URL or mail address."""
    found = []
    for number, line in enumerate(prose(path.read_text(encoding="utf-8")).splitlines(), 1):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
                continue
            found.append((target, number))
    return found


def shown(path: Path) -> str:
    """A path as a message names it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken(path: Path, target: str) -> str | None:
    """Why a relative link from `path` leads nowhere, or None when it resolves (file, and anchor if given)."""
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"no file {shown(dest)}"
    if anchor:
        if dest.suffix != ".md":
            return f"anchor #{anchor} into a file that is not Markdown"
        if anchor not in anchors(dest):
            return f"no heading with anchor #{anchor} in {shown(dest)}"
    return None


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move reference material into docs/"


def test_readme_shows_both_fresh_machine_commands_near_the_top() -> None:
    text = README.read_text(encoding="utf-8")
    fresh = text.split("## Fresh machine", 1)
    assert len(fresh) == 2, "README.md has no 'Fresh machine' section"
    assert text.index("## Fresh machine") < text.index("\n## ", text.index("\n## ") + 1), \
        "the 'Fresh machine' section is not the README's first section"
    section = fresh[1].split("\n## ", 1)[0]
    for command in FRESH_MACHINE_COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\s*$", section, re.MULTILINE), \
            f"README's 'Fresh machine' section does not show `{command}` as a command line of its own"
        script = ROOT / command.split()[1]
        assert script.is_file(), f"{command}: {script.relative_to(ROOT)} does not exist"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [f"{page.relative_to(ROOT)}:{line}: ({target}) {why}"
                for target, line in relative_links(page) if (why := broken(page, target))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_speak_of_the_project_only(page: Path) -> None:
    problems = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        for pattern in MAKING_OF:
            if m := pattern.search(line):
                problems.append(f"{page.relative_to(ROOT)}:{number}: {m.group(0)!r} in {line.strip()[:100]!r}")
    assert not problems, "\n".join(problems)


def test_index_lists_every_page() -> None:
    index = DOCS / "index.md"
    linked = {(DOCS / target.partition("#")[0]).resolve() for target, _ in relative_links(index)}
    missing = [p.name for p in DOCS.glob("*.md") if p != index and p.resolve() not in linked]
    assert not missing, f"docs/index.md does not list {missing}"
    assert "docs/index.md" in README.read_text(encoding="utf-8"), "README.md does not link docs/index.md"


def source_files() -> list[Path]:
    skip = {".venv", ".git", "build", ".hypothesis", "docs"}
    return [p for p in ROOT.rglob("*") if p.suffix in {".py", ".sh", ".toml", ".yaml", ".yml"}
            and p.is_file() and p != Path(__file__).resolve() and not skip.intersection(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)]


def test_code_points_at_docs_pages_that_exist() -> None:
    problems = []
    for path in source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in DOCS_POINTER.finditer(text):
            page = DOCS / m.group(1)
            why = broken(page.parent / "index.md", m.group(1) + (m.group(2) or "")) if page.exists() \
                else f"no file docs/{m.group(1)}"
            if why:
                problems.append(f"{path.relative_to(ROOT)}: docs/{m.group(1)}{m.group(2) or ''}: {why}")
        for m in README_SECTION.finditer(text):
            problems.append(f"{path.relative_to(ROOT)}: {m.group(0)!r}: reference material lives in docs/ "
                            "(point at the page)")
    assert not problems, "\n".join(problems)


def test_slug_matches_the_renderers() -> None:
    assert slug("Trust: no one recalls what is not theirs (`fake_servers/recall/trust.py`)") == \
        "trust-no-one-recalls-what-is-not-theirs-fake_serversrecalltrustpy"
    assert slug("`recall-lab serve`") == "recall-lab-serve"
    assert slug("From verdicts to the article's words") == "from-verdicts-to-the-articles-words"


def test_checks_can_fail(tmp_path: Path) -> None:
    """The link checker finds a dead file, a dead anchor, and ignores links inside code."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#nope) [c](#title) `[d](gone.md)`\n\n```\n[e](gone.md)\n```\n")
    targets = [t for t, _ in relative_links(page)]
    assert targets == ["missing.md", "#nope", "#title"]
    assert broken(page, "missing.md") and broken(page, "#nope") and broken(page, "#title") is None
