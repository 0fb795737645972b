"""The session's state table (fake_servers/imap/state.py), checked through the sans-I/O session.

Why through the session and not the table alone: the table is only worth something if the session obeys it, so
every state/command pair is sent as a command line and the answer says whether it was refused for its state.
"""

from __future__ import annotations

import ast
import base64
from pathlib import Path

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap import state as state_module
from recall_lab.fake_servers.imap.session import COMMANDS
from recall_lab.fake_servers.imap.state import (
    ALLOWED,
    TRANSITIONS,
    Event,
    InvalidTransition,
    SessionState,
    StateMachine,
)
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, ALICE_PW, USERS, make_message
from .sansio import Client

S = SessionState
COMMAND_STATES = (S.NOT_AUTHENTICATED, S.AUTHENTICATED, S.SELECTED)


def _client(state: SessionState, **config) -> Client:
    """A fresh session brought into `state` by the commands a client would send."""
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    store.deliver(ALICE, make_message(1))
    c = Client(store, Accounts(USERS), **config)
    if state in (S.AUTHENTICATED, S.SELECTED, S.IDLE):
        c.login()
    if state in (S.SELECTED, S.IDLE):
        assert b"s OK" in c.send("s SELECT INBOX")
    if state is S.IDLE:
        assert c.send("i IDLE") == b"+ idling\r\n"
    if state is S.AUTHENTICATING:
        assert c.send("a AUTHENTICATE PLAIN") == b"+ \r\n"
    if state is S.STARTTLS_PENDING:
        assert c.send("t STARTTLS") == b"t OK Begin TLS negotiation now.\r\n"
    if state is S.LOGOUT:
        assert b"o OK" in c.send("o LOGOUT")
    assert c.session.state is state
    return c


def test_every_state_is_in_both_tables():
    assert set(ALLOWED) == set(SessionState) == set(TRANSITIONS)
    assert set().union(*ALLOWED.values()) == set(COMMANDS)


@pytest.mark.parametrize("state", COMMAND_STATES, ids=str)
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_allowed_or_refused_as_the_table_says(state: SessionState, name: str):
    c = _client(state)
    out = c.send(f"t {name}")
    refusal = f"t BAD {name} is not valid in the {state} state\r\n".encode()
    if name in ALLOWED[state]:
        assert b"is not valid in the" not in out, out
    else:
        assert out == refusal
        assert c.session.state is state


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_in_idle_every_command_line_only_ends_idle(name: str):
    assert not ALLOWED[S.IDLE]
    c = _client(S.IDLE)
    assert c.send(f"t {name}") == b"i BAD Expected DONE to end IDLE\r\n"
    assert c.session.state is S.SELECTED


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_while_authenticating_every_command_line_is_the_response(name: str):
    assert not ALLOWED[S.AUTHENTICATING]
    c = _client(S.AUTHENTICATING)
    out = c.send(f"t {name}")
    assert out.startswith(b"a ") and b"is not valid in the" not in out
    assert c.session.state is S.NOT_AUTHENTICATED


@pytest.mark.parametrize("state", (S.STARTTLS_PENDING, S.LOGOUT), ids=str)
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_runs_before_the_handshake_or_after_logout(state: SessionState, name: str):
    assert not ALLOWED[state]
    c = _client(state, tls_available=True)
    assert c.send(f"t {name}") == b""
    assert c.session.state is state


def test_idle_returns_to_the_state_it_was_entered_from():
    c = _client(S.AUTHENTICATED)
    assert c.send("i IDLE") == b"+ idling\r\n" and c.session.state is S.IDLE
    assert c.send("DONE") == b"i OK IDLE terminated.\r\n" and c.session.state is S.AUTHENTICATED
    c = _client(S.IDLE)
    assert c.send("DONE") == b"i OK IDLE terminated.\r\n" and c.session.state is S.SELECTED


def test_login_select_close_and_authenticate_moves():
    c = _client(S.NOT_AUTHENTICATED)
    c.login()
    assert c.session.state is S.AUTHENTICATED
    assert b"s OK" in c.send("s EXAMINE INBOX") and c.session.state is S.SELECTED
    assert b"u OK" in c.send("u UNSELECT") and c.session.state is S.AUTHENTICATED
    c = _client(S.AUTHENTICATING)
    response = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
    assert b"a OK" in c.send(response) and c.session.state is S.AUTHENTICATED
    c = _client(S.AUTHENTICATING)
    assert c.send("*") == b"a BAD AUTHENTICATE cancelled\r\n" and c.session.state is S.NOT_AUTHENTICATED
    c = _client(S.STARTTLS_PENDING, tls_available=True)
    c.session.tls_started()
    assert c.session.state is S.NOT_AUTHENTICATED and c.session.tls_active


def test_machine_refuses_moves_the_table_does_not_list():
    for state, moves in TRANSITIONS.items():
        for event in Event:
            if event in moves:
                continue
            machine = StateMachine()
            machine._state = state  # test only: put the machine in the state under test
            with pytest.raises(InvalidTransition):
                machine.handle(event)
    assert all(TRANSITIONS[state][Event.LOGOUT] is S.LOGOUT for state in SessionState)


def _assigned_attributes(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(attribute name, line, enclosing function) of every attribute assignment in `tree`."""
    found = []

    def visit(node: ast.AST, func: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute):
                    found.append((sub.attr, node.lineno, func))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, "")
    return found


def test_only_the_transition_function_assigns_the_state():
    """No module of the IMAP package assigns a session's `state`; the machine's `_state` is assigned only in
    StateMachine.__init__ and .handle (framing.py's `_state` is the framer's own, a different machine), and
    the session changes it only through `_transition`."""
    package = Path(state_module.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for attr, line, func in _assigned_attributes(tree):
            if attr == "state":
                offenders.append(f"{path.name}:{line}")
            elif attr == "_state" and path.name != "framing.py":
                if not (path.name == "state.py" and func in ("__init__", "handle")):
                    offenders.append(f"{path.name}:{line}")
            elif attr == "_machine" and not (path.name == "session.py" and func == "__init__"):
                offenders.append(f"{path.name}:{line}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "_machine":
                if not (path.name == "session.py" and node.func.attr == "handle"):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
    source = (package / "session.py").read_text()
    assert source.count("._machine.handle(") == 1
