"""Helpers of the recall tests: a lab per test, originals sent over SMTP, server state read back with imapclient,
an IDLE session that records what the server pushed, and a stand-in for a legacy desktop client.

Why imapclient in threads: it is a synchronous client and the lab's servers run on the test's event loop; every
imapclient call goes through `asyncio.to_thread`, so the loop keeps serving it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import pytest
from imapclient import IMAPClient

from recall_lab.fake_servers.recall.format import (
    RecallNotice,
    RecallStatus,
    build_notice,
    parse_recall_instruction,
    parse_report,
    verified_by,
)
from recall_lab.harness.config import DomainConfig, LabConfig
from recall_lab.harness.lab import Lab
from recall_lab.harness.own_name import client_name

CORP, EXT = "corp.example", "mail.example"
ALICE, BOB, CAROL = "alice@corp.example", "bob@corp.example", "carol@corp.example"
FRANK, GRACE, HEIDI = "frank@corp.example", "grace@corp.example", "heidi@corp.example"
DAVE, ERIN = "dave@mail.example", "erin@mail.example"
TIMEOUT = 5.0
PARSER = BytesParser(policy=policy.default)


def password(user: str) -> str:
    return f"{user.partition('@')[0]}-password"


#: Who keeps the organisation's mail in the labs `recall_lab` makes: "lab", or "dovecot" in the modules that
#: run their tests on both (`pytestmark = ORG_ON_BOTH_BACKENDS`; the `org_backend` fixture sets it per test).
ORG_BACKEND = {"kind": "lab"}
ORG_ON_BOTH_BACKENDS = pytest.mark.parametrize("org_backend", ["lab", "dovecot"], indirect=True)


@pytest.fixture(autouse=True)
def org_backend(request: pytest.FixtureRequest):
    """The organisation's backend for this test (parametrized where a module asks for both); skipped with the
    reason where Dovecot with LMTP is missing. A test listed in its module's DOVECOT_DIFFERS (test name -> why)
    runs as a strict xfail on Dovecot: it must keep failing there, for the reason given."""
    kind = getattr(request, "param", "lab")
    if kind == "dovecot":
        from recall_lab.harness.backends import lmtp_available

        if not lmtp_available():
            pytest.skip("Dovecot with LMTP is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
        differs = getattr(request.module, "DOVECOT_DIFFERS", {})
        name = request.node.originalname
        if name in differs:
            request.node.add_marker(pytest.mark.xfail(reason=differs[name], strict=True))
    ORG_BACKEND["kind"] = kind
    yield kind
    ORG_BACKEND["kind"] = "lab"


def lab_config(mode: str, **policies: Any) -> LabConfig:
    return LabConfig(domains=[
        DomainConfig.with_users(CORP, "organisation", ["alice", "bob", "carol", "frank", "grace", "heidi"],
                                policies={"recall_mode": mode, **policies}, backend=ORG_BACKEND["kind"]),
        DomainConfig.with_users(EXT, "external", ["dave", "erin"]),
    ])


@asynccontextmanager
async def recall_lab(mode: str, store: str = "memory", clock: Callable[[], float] = time.monotonic,
                     **policies: Any) -> AsyncIterator[Lab]:
    """A running lab; `clock` is the servers' clock (a test passes a fake one to age Trash or end a window)."""
    async with Lab(lab_config(mode, **policies), store=store, clock=clock) as lab:
        yield lab


async def send(lab: Lab, sender: str, to: Iterable[str] = (), cc: Iterable[str] = (), bcc: Iterable[str] = (),
               subject: str = "Quarterly numbers", body: str = "The numbers, before they are final.\n",
               extra_headers: dict[str, str] | None = None) -> str:
    """Submit a message over SMTP submission (AUTH) and wait until every delivery settled; its Message-ID."""
    msg = EmailMessage()
    msg["From"] = f"{sender.partition('@')[0].title()} <{sender}>"
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if bcc:
        msg["Bcc"] = ", ".join(bcc)
    msg["Subject"] = subject
    msg["Message-ID"] = mid = make_msgid(domain=sender.partition("@")[2])
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    ep = lab.submission(sender.partition("@")[2])
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=sender, password=password(sender),
                          start_tls=False, timeout=TIMEOUT, local_hostname=client_name(sender))
    await lab.wait_idle()
    return mid


# --- imapclient, in a thread --------------------------------------------------------------------------------


async def with_imap(lab: Lab, user: str, work: Callable[[IMAPClient], Any]) -> Any:
    ep = lab.imap(user.partition("@")[2])

    def run() -> Any:
        client = IMAPClient(ep.host, ep.port, ssl=False, timeout=TIMEOUT)
        try:
            client.login(user, password(user))
            return work(client)
        finally:
            client.logout()

    return await asyncio.to_thread(run)


@dataclass(frozen=True)
class Copy:
    folder: str
    uid: int
    message_id: str
    flags: frozenset[bytes]
    raw_headers: bytes

    @property
    def headers(self) -> EmailMessage:
        return PARSER.parsebytes(self.raw_headers)  # type: ignore[return-value]


async def server_state(lab: Lab, user: str) -> list[Copy]:
    """Every message of every folder of the user, as an IMAP client sees it."""

    def work(c: IMAPClient) -> list[Copy]:
        out = []
        for _flags, _sep, name in c.list_folders():
            c.select_folder(name, readonly=True)
            uids = c.search(["ALL"])
            for uid, data in sorted(c.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER]"]).items()):
                head = data[b"BODY[HEADER]"]
                mid = str(PARSER.parsebytes(head).get("Message-ID", "")).strip()
                out.append(Copy(name, uid, mid, frozenset(data[b"FLAGS"]), head))
        return out

    return await with_imap(lab, user, work)


async def locations(lab: Lab, user: str, mid: str) -> list[str]:
    """Folders holding `mid` for this user (read back over IMAP)."""
    return [c.folder for c in await server_state(lab, user) if c.message_id == mid]


async def open_message(lab: Lab, user: str, mid: str, folder: str = "INBOX") -> None:
    """Read it the way a mail program does (FETCH BODY[] sets \\Seen)."""

    def work(c: IMAPClient) -> None:
        c.select_folder(folder)
        uids = c.search(["HEADER", "Message-ID", mid])
        assert uids, f"{mid} not in {user}'s {folder}"
        c.fetch(uids, ["BODY[]"])

    await with_imap(lab, user, work)


async def move_message(lab: Lab, user: str, mid: str, dest: str, source: str = "INBOX") -> None:
    def work(c: IMAPClient) -> None:
        if not c.folder_exists(dest):
            c.create_folder(dest)
        c.select_folder(source)
        uids = c.search(["HEADER", "Message-ID", mid])
        assert uids, f"{mid} not in {user}'s {source}"
        c.move(uids, dest)

    await with_imap(lab, user, work)
    # the server has taken the move in: a store over another IMAP server (Dovecot) hears of a client's move when
    # it next looks, and wait_idle looks (the in-process stores heard of it during the MOVE)
    await lab.wait_idle()


async def reports_in_inbox(lab: Lab, user: str) -> list:
    """Recall reports in the user's INBOX that carry her own server's mark."""
    domain = user.partition("@")[2]
    out = []
    for copy in await server_state(lab, user):
        if copy.folder == "INBOX" and copy.headers.get("X-Recall-Report") is not None:
            raw = await with_imap(lab, user, lambda c, uid=copy.uid: _fetch_full(c, "INBOX", uid))
            if verified_by(raw) == domain:
                out.append(parse_report(raw))
    return out


def _fetch_full(c: IMAPClient, folder: str, uid: int) -> bytes:
    c.select_folder(folder, readonly=True)
    return c.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]


# --- an IDLE session ------------------------------------------------------------------------------------------


@dataclass
class IdleWatcher:
    """An imapclient session idling on one folder; `pushes` are the untagged responses it received."""

    lab: Lab
    user: str
    folder: str = "INBOX"
    qresync: bool = False
    pushes: list[tuple] = field(default_factory=list)

    async def __aenter__(self) -> IdleWatcher:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop = threading.Event()
        ready: asyncio.Future[None] = self._loop.create_future()
        ep = self.lab.imap(self.user.partition("@")[2])

        def settle(fut: asyncio.Future, exc: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(exc) if exc else fut.set_result(None)

        def run() -> None:
            try:
                client = IMAPClient(ep.host, ep.port, ssl=False, timeout=TIMEOUT)
                client.login(self.user, password(self.user))
                if self.qresync:
                    client.enable("QRESYNC")
                client.select_folder(self.folder)
                client.idle()
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self._loop.call_soon_threadsafe(settle, ready, exc)
                return
            self._loop.call_soon_threadsafe(settle, ready, None)
            try:
                while not self._stop.is_set():
                    for response in client.idle_check(timeout=0.05):
                        self._loop.call_soon_threadsafe(self._push, response)
                client.idle_done()
            finally:
                try:
                    client.logout()
                except Exception:
                    client.shutdown()

        self._thread = threading.Thread(target=run, name=f"idle {self.user} {self.folder}", daemon=True)
        self._thread.start()
        await asyncio.wait_for(ready, TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, TIMEOUT)

    def _push(self, response: tuple) -> None:
        self.pushes.append(response)
        self._changed.set()

    def kinds(self) -> list[bytes]:
        """EXISTS / EXPUNGE / FETCH / VANISHED, in the order pushed."""
        out = []
        for r in self.pushes:
            for part in r:
                if isinstance(part, bytes) and part.upper() in (b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED"):
                    out.append(part.upper())
        return out

    async def wait_for(self, predicate: Callable[[list[tuple]], bool], timeout: float = TIMEOUT) -> None:
        async def loop() -> None:
            while not predicate(self.pushes):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_kind(self, kind: bytes, timeout: float = TIMEOUT) -> None:
        await self.wait_for(lambda _p: kind in self.kinds(), timeout)

    async def barrier(self) -> None:
        """Put a marker message into the watched folder and wait until this session heard of it: whatever the
        server did before was pushed before it, so `pushes` is then complete (how a test proves "nothing")."""
        store = self.lab.store(self.user.partition("@")[2])
        start = len(self.pushes)
        store.append(self.user, self.folder, b"From: marker@corp.example\r\nSubject: barrier\r\n"
                     b"Message-ID: <barrier@test>\r\n\r\nbarrier\r\n")
        expected = store.mailbox(self.user, self.folder).exists
        await self.wait_for(lambda p: any(len(r) == 2 and r[1] == b"EXISTS" and r[0] == expected
                                          for r in p[start:]))
        del self.pushes[start:]


# --- a legacy desktop client, played by the test ------------------------------------------------------------


async def play_legacy_client(lab: Lab, user: str, original: str) -> RecallNotice:
    """What a classic desktop client does with a recall in the INBOX (the rule of classic Outlook): if the
    original is unread and in the same folder, delete both; otherwise keep both. Then send the notice over
    authenticated submission. Only recalls carrying the user's own server's mark are processed."""
    domain = user.partition("@")[2]
    state = await server_state(lab, user)
    recalls = [c for c in state if c.folder == "INBOX" and c.headers.get("X-Recall-Message-ID") == original]
    assert recalls, f"no recall for {original} in {user}'s INBOX"
    raw = await with_imap(lab, user, lambda c: _fetch_full(c, "INBOX", recalls[0].uid))
    assert verified_by(raw) == domain, "the server did not vouch for this recall"
    instruction = parse_recall_instruction(raw)
    assert instruction is not None
    copies = [c for c in state if c.message_id == original]
    in_inbox = [c for c in copies if c.folder == "INBOX"]
    if not copies:
        status = RecallStatus.NOT_FOUND
    elif not in_inbox:
        status = RecallStatus.FAILED_MOVED
    elif any(b"\\Seen" in c.flags for c in in_inbox):
        status = RecallStatus.FAILED_READ
    else:
        status = RecallStatus.RECALLED

        def delete(c: IMAPClient) -> None:
            c.select_folder("INBOX")
            uids = [x.uid for x in in_inbox] + [recalls[0].uid]
            c.add_flags(uids, [b"\\Deleted"])
            c.expunge(uids)

        await with_imap(lab, user, delete)
    notice = RecallNotice(original, instruction.original_subject, user, status)
    ep = lab.submission(domain)
    await aiosmtplib.send(build_notice(notice, to=instruction.sender), hostname=ep.host, port=ep.port,
                          username=user, password=password(user), start_tls=False, timeout=TIMEOUT,
                          local_hostname=client_name(user))
    await lab.wait_idle()
    return notice
