"""The tests and scripts never make an SMTP client or a Message-ID that looks up the machine's own name.

Why: smtplib.SMTP / SMTP_SSL / LMTP, aiosmtplib.SMTP and aiosmtplib.send created without `local_hostname`,
and `email.utils.make_msgid()` without a domain, call `socket.getfqdn()`: a reverse DNS query that takes
seconds on a machine whose own name is not in /etc/hosts, which made the suite slow there (and its timings the
network's). The lab itself names every client (harness/own_name.py; tests/lab/test_no_own_name_lookup.py
proves it at run time); this check keeps the test and benchmark code honest too, cheaply: it reads the sources
(ast), it does not run them.

The rule for a call: `local_hostname=` (or smtplib's third positional argument) must be given, or the call's
keywords come from `**helper(...)`, a function of the same file that sets `local_hostname`; `make_msgid` needs
`domain=` (or its second positional argument). imaplib, imapclient and aioimaplib look up nothing. Python code
inside string literals (the projects pytester writes, `python -c` programs) is checked the same way. A line
that makes the lookup on purpose (to prove a lookup is caught) says so with the marker ON_PURPOSE.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("tests", "scripts")
#: Calls that name the client with socket.getfqdn() unless told otherwise, and how many positional arguments
#: reach `local_hostname` (None: keyword only).
SMTP_CLIENTS: dict[str, int | None] = {
    "smtplib.SMTP": 3, "smtplib.SMTP_SSL": 3, "smtplib.LMTP": 3,
    "aiosmtplib.SMTP": None, "aiosmtplib.smtp.SMTP": None,
    "aiosmtplib.send": None, "aiosmtplib.api.send": None,
}
MAKE_MSGID = "email.utils.make_msgid"
#: Words that make a string literal worth parsing as Python.
_CODE_HINTS = ("smtplib", "make_msgid")
ON_PURPOSE = "own-name lookup on purpose"


def _bindings(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it stands for, from every import of the file (at any depth)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    first = alias.name.split(".")[0]
                    names[first] = first
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _qualified(func: ast.expr, names: dict[str, str]) -> str | None:
    """`smtplib.SMTP` for `smtplib.SMTP`, for `SMTP` imported from smtplib, for `s.SMTP` after
    `import smtplib as s`."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in names:
        return None
    return ".".join([names[func.id], *reversed(parts)])


def _sets_local_hostname(function: ast.AST) -> bool:
    """Whether a helper's body puts `local_hostname` into the keywords it builds (a dict key or a keyword)."""
    for node in ast.walk(function):
        if isinstance(node, ast.Constant) and node.value == "local_hostname":
            return True
        if isinstance(node, ast.keyword) and node.arg == "local_hostname":
            return True
    return False


def _names_itself(call: ast.Call, positional: int | None, helpers: dict[str, ast.AST]) -> bool:
    if positional is not None and len(call.args) >= positional:
        return True
    for kw in call.keywords:
        if kw.arg == "local_hostname":
            return True
        if kw.arg is None and isinstance(kw.value, ast.Call) and isinstance(kw.value.func, ast.Name):
            helper = helpers.get(kw.value.func.id)
            if helper is not None and _sets_local_hostname(helper):
                return True
    return False


def _embedded(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line of the literal, code) for each string literal of the file that parses as Python and might call
    one of the checked functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and any(
                hint in node.value for hint in _CODE_HINTS):
            code = textwrap.dedent(node.value)
            try:
                ast.parse(code)
            except SyntaxError:
                continue
            yield node.lineno, code


def offenders(source: str, filename: str = "<source>", first_line: int = 1) -> Iterator[str]:
    """`file:line: what` for every call in `source` that would look up the machine's own name."""
    lines = source.splitlines()
    for found in _calls(source, filename, first_line):
        line = int(found.split(":")[1])
        if first_line == 1 and 0 < line <= len(lines) and ON_PURPOSE in lines[line - 1]:
            continue
        yield found


def _calls(source: str, filename: str, first_line: int) -> Iterator[str]:
    tree = ast.parse(source, filename)
    for line, code in _embedded(tree):
        yield from _calls(code, filename, first_line + line - 1)
    names = _bindings(tree)
    helpers = {node.name: node for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, names)
        line = first_line + node.lineno - 1
        if name in SMTP_CLIENTS and not _names_itself(node, SMTP_CLIENTS[name], helpers):
            yield f"{filename}:{line}: {name}(...) without local_hostname"
        elif name == MAKE_MSGID and len(node.args) < 2 and all(kw.arg != "domain" for kw in node.keywords):
            yield f"{filename}:{line}: make_msgid() without domain"


def test_tests_and_scripts_never_look_up_their_own_name() -> None:
    found = []
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():  # its own samples are offenders on purpose
                continue
            found += offenders(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, ("these calls make Python look up the machine's own name (socket.getfqdn); give "
                       "local_hostname= / domain=:\n" + "\n".join(found))


def test_the_check_can_fail() -> None:
    """Every spelling of an unnamed client is found; named ones, and helpers that name them, are not."""
    source = '''
import smtplib, aiosmtplib
import smtplib as s
import email.utils
from aiosmtplib import SMTP as A, send
from email.utils import make_msgid
from email import utils

def args(lab):
    return {"hostname": lab.host, "local_hostname": "corp.example"}

def bare(lab):
    return {"hostname": lab.host}

async def f(lab, x):
    smtplib.SMTP("h", 25)                                  # 16
    s.SMTP_SSL("h", 465)                                   # 17
    A(hostname="h")                                        # 18
    await send(x, hostname="h")                            # 19
    await aiosmtplib.send(x, **bare(lab))                  # 20
    make_msgid()                                           # 21
    email.utils.make_msgid("x")                            # 22
    utils.make_msgid(idstring="x")                         # 23
    smtplib.SMTP("h", 25, "localhost")
    smtplib.SMTP("h", 25, local_hostname="localhost")
    aiosmtplib.SMTP(hostname="h", local_hostname="localhost")
    await aiosmtplib.send(x, **args(lab))
    make_msgid(domain="lab.test")
    make_msgid("x", "lab.test")
    make_msgid()  # own-name lookup on purpose
    run(["python", "-c", "import smtplib; smtplib.SMTP('h', 25)"])                           # 31
    run(["python", "-c", "import smtplib; smtplib.SMTP('h', 25)"])  # own-name lookup on purpose
    PROJECT = """
        import smtplib

        def send(host, port):
            with smtplib.SMTP(host, port) as smtp:                                            # 37
                smtp.noop()
    """
'''
    lines = [int(line.split(":")[1]) for line in offenders(source)]
    assert sorted(lines) == [*range(16, 24), 31, 37]
