"""THREAD and SORT=DISPLAY against the reference: the same random mailboxes in a private Dovecot and here.

Why random mailboxes: REFERENCES has many rules for disagreeing headers (duplicate and missing ids, loops,
References against In-Reply-To, dummies, subject gathering, ties), and their combinations are where two
implementations part. Each seed builds a mailbox from a small pool of ids, subjects, dates and addresses (so
collisions are frequent), APPENDs it to Dovecot and to our store with the same INTERNALDATEs, then runs the
same commands on both, expunges included, and compares the untagged answers. Names are ASCII: Dovecot sorts
with i;unicode-casemap where RFC 5256 and this server use i;ascii-casemap (docs/imap.md).
"""

from __future__ import annotations

import imaplib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore
from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable, dovecot_binary

from .sansio import Client

pytestmark = pytest.mark.peer("dovecot")

SEEDS = range(40)
_SUBJECTS = ["a", "Re: a", "Fwd: a", "b", "re: [x] b", "[fwd: a]", "", None, "a (fwd)", "B", "Re: b", "c"]
_ADDRESSES = ["a@b.c", "Zed <z@y>", "=?utf-8?q?eric?= <e@x>", '"" <q@q>', "grp: x@y;", "empty:;", "d", "<>",
              "Al <al@x>, b@c", "b@C.d", "(c) a@b"]
COMMANDS = [
    "THREAD REFERENCES US-ASCII ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "THREAD REFERENCES UTF-8 NOT 3",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "SORT (DISPLAYTO) UTF-8 ALL",
    "SORT (REVERSE DISPLAYFROM SUBJECT) UTF-8 ALL",
    "STORE 2,5 +FLAGS.SILENT (\\Deleted)",
    "EXPUNGE",
    "THREAD REFERENCES UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "STORE 1 +FLAGS.SILENT (\\Deleted)",
    "EXPUNGE",
    "THREAD REFERENCES UTF-8 ALL",
]
_BASE = datetime(2020, 1, 1, tzinfo=UTC)


def mailbox(seed: int) -> list[tuple[bytes, datetime]]:
    """6 to 25 messages whose headers collide often."""
    rng = random.Random(seed)
    n = rng.randint(6, 25)
    ids = [f"<{i}@x>" for i in range(n // 2 + 2)]
    messages = []
    for k in range(n):
        h = []
        r = rng.random()
        if r < 0.8:
            h.append(f"Message-ID: {rng.choice(ids)}")
        elif r < 0.9:
            h.append("Message-ID: bogus")
        r = rng.random()
        if r < 0.5:
            h.append("References: " + " ".join(rng.choice(ids) for _ in range(rng.randint(1, 4))))
        elif r < 0.7:
            h.append("In-Reply-To: " + rng.choice(ids))
        elif r < 0.75:
            h += ["References: junk", "In-Reply-To: " + rng.choice(ids)]
        for name in ("From", "To"):
            if rng.random() < 0.8:
                h.append(f"{name}: {rng.choice(_ADDRESSES)}")
        subject = rng.choice(_SUBJECTS)
        if subject is not None:
            h.append(f"Subject: {subject}")
        r = rng.random()
        if r < 0.6:
            h.append("Date: " + (_BASE + timedelta(minutes=rng.randint(0, 5))).strftime("%a, %d %b %Y %H:%M:%S +0000"))
        elif r < 0.7:
            h.append("Date: nonsense")
        raw = ("\r\n".join(h) + f"\r\n\r\nbody {k}\r\n").encode()
        messages.append((raw, _BASE + timedelta(minutes=rng.randint(0, 5))))
    return messages


def _answers(lines: list[bytes]) -> list[bytes]:
    return [line.rstrip() for line in lines if line.startswith((b"* THREAD", b"* SORT"))]


def ours(messages: list[tuple[bytes, datetime]]) -> list[list[bytes]]:
    store = MemoryStore()
    store.ensure_user("u@corp.example")
    for raw, when in messages:
        store.append("u@corp.example", "INBOX", raw, (), when)
    c = Client(store, Accounts({"u@corp.example": "pw"}))
    c.login("u@corp.example", "pw")
    c.send("s SELECT INBOX")
    result = []
    for command in COMMANDS:
        out = c.send(f"t {command}")
        assert out.split(b"\r\n")[-2].startswith(b"t OK"), (command, out)
        result.append(_answers(out.split(b"\r\n")))
    return result


def theirs(dovecot: DovecotServer, user: str, messages: list[tuple[bytes, datetime]]) -> list[list[bytes]]:
    client = imaplib.IMAP4(dovecot.host, dovecot.port)
    with client:  # LOGOUT at the end, whatever happens
        client.login(user, "pw")
        for raw, when in messages:
            client.append("INBOX", None, imaplib.Time2Internaldate(when.timestamp()), raw)
        client.select("INBOX")
        result = []
        for command in COMMANDS:
            tag = client._new_tag()  # raw command and lines: imaplib has no THREAD answer parser of its own
            client.send(tag + b" " + command.encode() + b"\r\n")
            lines = []
            while not (line := client._get_line()).startswith(tag):
                lines.append(line)
            assert line.startswith(tag + b" OK"), (command, line)
            result.append(_answers(lines))
    return result


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    if dovecot_binary() is None:
        pytest.skip("Dovecot is not installed")
    try:
        server = DovecotServer(Path(tmp_path_factory.mktemp("dovecot-thread")), {}).start()
    except DovecotUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_thread_and_display_sort_answer_as_dovecot_does(dovecot: DovecotServer, seed: int) -> None:
    messages = mailbox(seed)
    user = f"thread{seed}@corp.example"
    dovecot.add_user(user, "pw")
    expected = theirs(dovecot, user, messages)
    assert all(answer for command, answer in zip(COMMANDS, expected, strict=True)
               if "THREAD" in command or "SORT" in command), expected
    assert ours(messages) == expected
