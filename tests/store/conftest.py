"""Fixtures for the store tests: every contract test runs against both implementations."""

from __future__ import annotations

import pytest

from recall_lab.fake_servers.store import MaildirStore, MemoryStore
from recall_lab.fake_servers.store.base import MailStore, StoreEvent

ALICE = "alice@corp.example"
BOB = "bob@corp.example"


def message(n: int | str, subject: str = "hello", mid: str | None = None) -> bytes:
    """A small CRLF message; Message-ID <n@corp.example> unless `mid` is given ("" for none)."""
    mid = f"<{n}@corp.example>" if mid is None else mid
    header = f"Message-ID: {mid}\r\n" if mid else ""
    return (f"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: {subject} {n}\r\n{header}"
            f"\r\nbody {n}\r\n").encode()


@pytest.fixture(params=["memory", "maildir"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_store(kind: str, tmp_path):
    """A factory: make_store() opens a store (again, for maildir: the same directory = a restart)."""
    opened: list[MailStore] = []

    def factory() -> MailStore:
        store = MemoryStore() if kind == "memory" else MaildirStore(tmp_path / "mail")
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store) -> MailStore:
    s = make_store()
    s.ensure_user(ALICE)
    return s


@pytest.fixture
def events(store: MailStore) -> list[StoreEvent]:
    seen: list[StoreEvent] = []
    store.subscribe(seen.append)
    yield seen
    store.unsubscribe(seen.append)
