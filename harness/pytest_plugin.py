"""pytest plugin of recall-lab (entry point pytest11): fixtures for a real mail lab in tests.

Why the lab runs in a thread of its own: a user's code under test is as often synchronous (smtplib, imaplib,
imapclient) as async. A lab in its own event loop and thread (`recall_lab.harness.lab.BlockingLab`) answers both: blocking
calls from the test never stall the servers, and async clients in the test's loop reach it over sockets.

Why everything is imported lazily: pytest imports this module in EVERY run of a project that has recall-lab
installed, so importing it must be cheap and must not fail; the lab and clients load when a fixture is used.

Fixtures:
    mail_lab          a running lab (function scope; ini `recall_lab_scope = session` makes it per session);
                      `@pytest.mark.mail_lab(config="lab.toml")` or ini `recall_lab_config` picks the config;
                      `mail_lab(capture=True)` or ini `recall_lab_capture` adds capture mode; the helpers
                      `messages`, `message`, `latest`, `find`, `wait_for`, `clear` (harness/mail_helpers.py)
    mail_lab_session  the same, one per session (per xdist worker)
    desktop_client    async factory: `client = await desktop_client("bob@corp.example", **options)`
    web_client        factory: `web_client("bob@corp.example")` (state under tmp_path)
    recall_agent      factory: `recall_agent("alice@corp.example")` (async agent; `sync=True` for the other)
Under pytest-xdist each worker process has its own lab on its own ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:  # the async fixtures need pytest-asyncio; without it only they are missing
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a test dependency here
    pytest_asyncio = None  # type: ignore[assignment]

INI_CONFIG = "recall_lab_config"
INI_SCOPE = "recall_lab_scope"
INI_STORE = "recall_lab_store"
INI_CAPTURE = "recall_lab_capture"
_TIMED_OUT = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_CONFIG, "recall-lab: TOML lab config for the mail_lab fixture (default: the built-in lab)",
                  default="")
    parser.addini(INI_SCOPE, "recall-lab: scope of the mail_lab fixture, 'function' (default) or 'session'",
                  default="function")
    parser.addini(INI_STORE, "recall-lab: store of the lab, 'memory' (default) or 'maildir:DIR'", default="memory")
    parser.addini(INI_CAPTURE, "recall-lab: run capture mode in every lab (SMTP that takes any mail, IMAP to "
                               "read it)", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mail_lab(config=None, capture=False): run this test's mail_lab with another lab config (a "
                   "TOML path, relative to the rootdir, or a recall_lab.harness.config.LabConfig); capture=True "
                   "adds capture mode (SMTP that takes any sender and recipient, IMAP to read it)")


class MailLab:
    """A running lab as a test sees it: the lab's read-only API plus helpers that await instead of sleeping.

    `endpoints()`, `imap(d)`, `submission(d)`, `mx(d)`, `users(d)`, `password(u)`, `domains` come from the lab.
    Everything that touches a store runs in the lab's own thread (stores are not thread-safe).
    """

    def __init__(self, blocking: Any) -> None:
        self.lab = blocking  # recall_lab.harness.lab.BlockingLab

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lab, name)

    # -- sending --
    def send(self, sender: str, to: str | list[str], subject: str = "Hello", body: str = "Hello.\n", *,
             message_id: str | None = None, headers: dict[str, str] | None = None) -> str:
        """Submit a message as `sender` over authenticated SMTP submission; returns its Message-ID."""
        import smtplib
        from email.message import EmailMessage
        from email.utils import make_msgid

        from recall_lab.harness.own_name import client_name

        recipients = [to] if isinstance(to, str) else list(to)
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = subject
        msg["Message-ID"] = message_id or make_msgid(domain=client_name(sender))
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(body)
        endpoint = self.lab.submission(sender.rpartition("@")[2])
        with smtplib.SMTP(endpoint.host, endpoint.port, timeout=10, local_hostname=client_name(sender)) as smtp:
            smtp.login(sender, self.lab.password(sender))
            smtp.send_message(msg, from_addr=sender, to_addrs=recipients)
        return str(msg["Message-ID"])

    # -- reading the store (in the lab's thread) --
    def _domain(self, user: str) -> str:
        return self.lab.domain_of(user)

    def locations(self, user: str, message_id: str) -> list[Any]:
        """Where the user's copies of the message are (`MessageLocation(mailbox, uid)`), any folder."""
        store = self.lab.store(self._domain(user))
        return self.lab.call(lambda: store.find_by_message_id(user, message_id))

    def message_ids(self, user: str, mailbox: str = "INBOX") -> list[str | None]:
        store = self.lab.store(self._domain(user))
        return self.lab.call(lambda: [r.message_id for r in store.messages(user, mailbox)])

    def fetch(self, user: str, message_id: str) -> bytes:
        store = self.lab.store(self._domain(user))

        def read() -> bytes:
            found = store.find_by_message_id(user, message_id)
            if not found:
                raise LookupError(f"{user} has no message {message_id}")
            return store.fetch_raw(user, found[0].mailbox, found[0].uid)

        return self.lab.call(read)

    # -- waiting without sleeping --
    def _until(self, user: str, check: Callable[[Any], Any], timeout: float, what: str) -> Any:
        """Run in the lab's loop: return check(store) once it is truthy, re-checked on every store event."""
        store = self.lab.store(self._domain(user))

        async def wait() -> Any:
            changed = asyncio.Event()

            def listener(_event: Any) -> None:
                changed.set()

            store.subscribe(listener)
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        result = check(store)
                        if result:
                            return result
                        changed.clear()
                        await changed.wait()
            except TimeoutError:
                return _TIMED_OUT
            finally:
                store.unsubscribe(listener)

        # the timeout travels back as a value: BlockingLab.call reports any TimeoutError as its own
        result = self.lab.call(wait(), timeout + 5)
        if result is _TIMED_OUT:
            raise TimeoutError(f"{what} within {timeout:g} s")
        return result

    def wait_for_message(self, user: str, message_id: str, timeout: float = 5.0, mailbox: str | None = None
                         ) -> Any:
        """Block until the user has the message (in `mailbox`, or anywhere); returns its MessageLocation."""
        def check(store: Any) -> Any:
            found = [loc for loc in store.find_by_message_id(user, message_id)
                     if mailbox is None or loc.mailbox == mailbox]
            return found[0] if found else None

        return self._until(user, check, timeout, f"{message_id} did not reach {user}")

    def wait_for_gone(self, user: str, message_id: str, timeout: float = 5.0) -> None:
        self._until(user, lambda store: not store.find_by_message_id(user, message_id), timeout,
                    f"{message_id} is still in {user}'s mailbox")

    def wait_for_count(self, user: str, count: int, mailbox: str = "INBOX", timeout: float = 5.0) -> None:
        """Block until the mailbox holds exactly `count` messages."""
        self._until(user, lambda store: len(store.messages(user, mailbox)) == count, timeout,
                    f"{user}'s {mailbox} did not reach {count} messages")

    @contextlib.contextmanager
    def watch(self, user: str, mailbox: str = "INBOX") -> Iterator[MailboxWatch]:
        """`with mail_lab.watch(u) as w: act(); w.wait()`: events of that mailbox from the start of the block."""
        store = self.lab.store(self._domain(user))
        watch = MailboxWatch(self, store, user, mailbox)
        self.lab.call(lambda: store.subscribe(watch._listener))
        try:
            yield watch
        finally:
            self.lab.call(lambda: store.unsubscribe(watch._listener))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until every delivery and relay in flight is done."""
        self.lab.wait_idle(timeout)

    # -- a test of an application's mail (harness/mail_helpers.py; run in the lab's thread) --
    def messages(self, user: str, folder: str = "INBOX") -> list[Any]:
        """The user's messages in `folder`, oldest first: parsed `EmailMessage`s with `.raw` (bytes)."""
        return self.lab.messages(user, folder)

    def message(self, user: str, message_id: str) -> Any:
        """The user's message with that Message-ID, parsed; LookupError when there is none."""
        return self.lab.message(user, message_id)

    def latest(self, user: str, folder: str = "INBOX") -> Any:
        """The user's newest message in `folder`, parsed; LookupError when the folder is empty."""
        return self.lab.latest(user, folder)

    def find(self, *, to: str | None = None, subject: Any = None, text: Any = None, since: Any = None,
             folder: str = "INBOX") -> list[Any]:
        """Every message matching the filters, over every user and the capture, oldest first (strings match as
        case-insensitive substrings, compiled patterns as regular expressions; `since`: an aware datetime)."""
        return self.lab.find(to=to, subject=subject, text=text, since=since, folder=folder)

    def wait_for(self, *, to: str | None = None, subject: Any = None, text: Any = None, since: Any = None,
                 folder: str = "INBOX", timeout: float = 5.0) -> Any:
        """Block until a message matching the filters is stored (at once when one is); returns it, parsed.
        Woken by the stores' events, never by polling; TimeoutError naming the filters after `timeout`."""
        return self.lab.wait_for(to=to, subject=subject, text=text, since=since, folder=folder, timeout=timeout)

    def clear(self, user: str | None = None) -> int:
        """Delete every message of `user`, or of everyone (capture included); returns how many."""
        return self.lab.clear(user)

    # -- async spellings for async tests (the blocking wait runs in a worker thread) --
    async def await_for(self, **filters: Any) -> Any:
        """`wait_for` for async tests."""
        return await asyncio.to_thread(self.wait_for, **filters)

    async def await_message(self, user: str, message_id: str, timeout: float = 5.0, mailbox: str | None = None
                            ) -> Any:
        return await asyncio.to_thread(self.wait_for_message, user, message_id, timeout, mailbox)

    async def await_gone(self, user: str, message_id: str, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.wait_for_gone, user, message_id, timeout)

    async def await_idle(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_idle, timeout)

    async def asend(self, *args: Any, **kwargs: Any) -> str:
        return await asyncio.to_thread(self.send, *args, **kwargs)


class MailboxWatch:
    """Store events of one mailbox seen since the watch began; `wait()` blocks until there is one more."""

    def __init__(self, lab: MailLab, store: Any, user: str, mailbox: str) -> None:
        self._lab, self._store, self.user, self.mailbox = lab, store, user.lower(), mailbox
        self.events: list[Any] = []
        self._seen = 0
        self._changed: asyncio.Event | None = None

    def _listener(self, event: Any) -> None:
        if getattr(event, "user", None) == self.user and getattr(event, "mailbox", None) == self.mailbox:
            self.events.append(event)
            if self._changed is not None:
                self._changed.set()

    def wait(self, timeout: float = 5.0) -> list[Any]:
        """The events not returned by an earlier wait(), at least one (TimeoutError otherwise)."""
        async def wait() -> list[Any]:
            self._changed = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    while len(self.events) <= self._seen:
                        self._changed.clear()
                        await self._changed.wait()
            except TimeoutError:
                return _TIMED_OUT
            new, self._seen = self.events[self._seen:], len(self.events)
            return new

        result = self._lab.lab.call(wait(), timeout + 5)
        if result is _TIMED_OUT:
            raise TimeoutError(f"{self.user}'s {self.mailbox} did not change within {timeout:g} s")
        return result


# --- building the lab ------------------------------------------------------------------------------------------


def _lab_config(config: pytest.Config, marker: pytest.Mark | None) -> Any:
    from recall_lab.harness.config import LabConfig, default_config, load_config

    spec: Any = None
    if marker is not None:
        spec = marker.kwargs.get("config", marker.args[0] if marker.args else None)
    if spec is None:
        spec = config.getini(INI_CONFIG) or None
    if spec is None:
        lab_config = default_config()
    elif isinstance(spec, LabConfig):
        lab_config = spec
    else:
        path = Path(spec)
        if not path.is_absolute():
            path = Path(config.rootpath) / path
        lab_config = load_config(path)
    return _with_capture(lab_config, marker.kwargs.get("capture") if marker is not None else None,
                         bool(config.getini(INI_CAPTURE)))


def _with_capture(lab_config: Any, wanted: Any, ini: bool) -> Any:
    """The config with capture mode as the marker's `capture=` (True, False, or CaptureSettings) or the ini
    option asks; a copy, never the caller's LabConfig changed."""
    import dataclasses

    from recall_lab.fake_servers.capture import CaptureSettings

    if wanted is None:
        wanted = True if ini and lab_config.capture is None else None
    if wanted is None:
        return lab_config
    if isinstance(wanted, CaptureSettings):
        settings: Any = wanted
    elif wanted is True:
        settings = lab_config.capture or CaptureSettings()
    elif wanted is False:
        settings = None
    else:
        raise TypeError(f"mail_lab(capture=...) takes True, False or a CaptureSettings, not {wanted!r}")
    return dataclasses.replace(lab_config, capture=settings)


@contextlib.contextmanager
def _running_lab(config: pytest.Config, marker: pytest.Mark | None) -> Iterator[MailLab]:
    from recall_lab.harness.lab import BlockingLab

    blocking = BlockingLab(_lab_config(config, marker), store=config.getini(INI_STORE) or "memory")
    blocking.start()
    try:
        yield MailLab(blocking)
    finally:
        blocking.stop()


def _scope(fixture_name: str, config: pytest.Config) -> str:
    scope = (config.getini(INI_SCOPE) or "function").strip().lower()
    return scope if scope in ("function", "module", "session") else "function"


@pytest.fixture(scope="session")
def mail_lab_session(pytestconfig: pytest.Config) -> Iterator[MailLab]:
    """One lab for the whole session (per xdist worker)."""
    with _running_lab(pytestconfig, None) as lab:
        yield lab


@pytest.fixture(scope=_scope)
def mail_lab(request: pytest.FixtureRequest) -> Iterator[MailLab]:
    """A running lab; see the module docstring for the marker and ini options."""
    marker = request.node.get_closest_marker("mail_lab") if request.scope == "function" else None
    with _running_lab(request.config, marker) as lab:
        yield lab


@pytest.fixture
def web_client(mail_lab: MailLab, tmp_path: Path) -> Callable[..., Any]:
    """Factory: `web_client(user, **options)` -> recall_lab.harness.clients.WebClient of the lab's user."""
    from recall_lab.harness.clients.web import WebClient

    def make(user: str, **options: Any) -> Any:
        options.setdefault("name", f"web-{user}")
        return WebClient(user, mail_lab.password(user), mail_lab.web.url, tmp_path / "web", **options)

    return make


@pytest.fixture
def recall_agent(mail_lab: MailLab) -> Callable[..., Any]:
    """Factory: `recall_agent(user)` -> recall_lab.harness.recall_agent.RecallAgent (`sync=True`: SyncRecallAgent)."""
    def make(user: str, *, sync: bool = False, **options: Any) -> Any:
        from recall_lab.harness.recall_agent import RecallAgent, SyncRecallAgent

        cls = SyncRecallAgent if sync else RecallAgent
        return cls(mail_lab, user, mail_lab.password(user), **options)

    return make


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def desktop_client(mail_lab: MailLab) -> Any:
        """Async factory: `await desktop_client(user, **options)` -> a started recall_lab.harness.clients.DesktopClient
        (submission set, so legacy recall notices can be sent); all are stopped after the test."""
        from recall_lab.harness.clients.desktop import DesktopClient

        started: list[Any] = []

        async def make(user: str, **options: Any) -> Any:
            domain = mail_lab.domain_of(user)
            options.setdefault("submission", mail_lab.submission(domain))
            client = DesktopClient(user, mail_lab.password(user), mail_lab.imap(domain), **options)
            await client.start()
            started.append(client)
            return client

        yield make
        for client in started:
            with contextlib.suppress(Exception):
                await client.stop()

else:  # pragma: no cover

    @pytest.fixture
    def desktop_client() -> Any:
        pytest.skip("the desktop_client fixture needs pytest-asyncio installed")
