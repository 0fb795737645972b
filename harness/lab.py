"""The Lab: every domain's mail server (IMAP, submission, MX, pipeline, relay) started in one asyncio loop.

Why in-process and in one loop: a lab starts in milliseconds, tests get real sockets on ephemeral ports, and the
stores (synchronous, loop-thread only) are safe. `Lab` is the async context manager; `BlockingLab` runs one in a
loop of its own thread for synchronous code (imapclient, the CLI). Harness code reaches the servers only through
sockets and the public APIs re-exported here (endpoints, the domain's MailStore, DomainServices).

Ports: ephemeral by default. With `port_base=N`, domain number i (config order, from 0) listens on
N+10*i (IMAP), N+10*i+1 (submission), N+10*i+2 (MX), and with TLS N+10*i+3 (IMAPS) and N+10*i+4
(submission over implicit TLS).

Faults: each domain's injected faults (`lab.faults(domain)`, a `recall_lab.fake_servers.faults.FaultSet`) come
from its config's `faults` table; tests add and clear rules at run time (docs/faults.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from recall_lab.fake_servers.activity import Activity
from recall_lab.fake_servers.capture import CaptureServer
from recall_lab.fake_servers.domain import (
    DomainServer,
    DomainSpec,
    Endpoint,
    ListenError,
    PolicySettingsError,
    Ports,
)
from recall_lab.fake_servers.faults import FaultSet
from recall_lab.fake_servers.guard import ConnectionGuard
from recall_lab.fake_servers.pipeline import DomainServices, load_policy_modules
from recall_lab.fake_servers.smtp.relay import RelayEntry, Route
from recall_lab.fake_servers.store import MailStore, StoreError, open_store
from recall_lab.fake_servers.transcript import TranscriptRecorder
from recall_lab.harness.backends import Backend, BackendError, open_backend
from recall_lab.harness.config import LabConfig, default_config
from recall_lab.harness.mail_helpers import ArrivalLog, MailHelpers

__all__ = ["BlockingLab", "Endpoint", "Lab", "LabStartError", "PORT_OFFSETS"]

T = TypeVar("T")

#: Offsets from a domain's port block (port_base + 10 * domain index).
PORT_OFFSETS = {"imap": 0, "submission": 1, "mx": 2, "imaps": 3, "submissions": 4}
PORTS_PER_DOMAIN = 10


class LabStartError(Exception):
    """The lab could not start (a port in use, a bad store spec): one line, fit for the CLI."""


def parse_store_spec(spec: str) -> tuple[str, Path | None]:
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "memory" and not arg:
        return "memory", None
    if kind == "maildir" and arg:
        return "maildir", Path(arg)
    raise LabStartError(f"unknown store {spec!r}: use 'memory' or 'maildir:DIR'")


def _reason(exc: BaseException) -> str:
    """One line for the user: the store's message without its generic prefix, or an OSError's strerror."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    text = text.removeprefix("Mail storage error: ")
    return " ".join(text.split())


class Lab(MailHelpers):
    """A running lab of mail domains (see the module docstring); the helpers a test of an application's mail
    wants (`messages`, `find`, `wait_for`, ...) come from `MailHelpers` (harness/mail_helpers.py)."""

    def __init__(self, config: LabConfig | None = None, *, store: str = "memory", host: str = "127.0.0.1",
                 port_base: int | None = None, tls: ssl.SSLContext | None = None,
                 transcripts: TranscriptRecorder | None = None, relay_connections: int = 2,
                 imap: bool = True, clock: Callable[[], float] = time.monotonic, web: bool = True,
                 web_port: int = 0, web_token: str | None = None, tls_cafile: str | Path | None = None,
                 tls_handshake_timeout: float = 10.0, watch_backends: bool = True,
                 tls_files: tuple[Path, Path] | None = None) -> None:
        """`tls`: a server-side context; every port offers STARTTLS and each domain also listens for IMAPS and
        submission over implicit TLS (`tls_cafile`: the CA file a client trusts, named in the endpoints JSON;
        `tls_handshake_timeout`: seconds a client of an implicit-TLS port has to finish its handshake).
        `web`: start the lab's web server (webmail, console, HTTP API; docs/web.md) on `host`:`web_port`
        (0: an ephemeral port) with `web_token` (None: a random one; required on a non-loopback host).
        `clock`: the seconds every domain's policies keep time by (retention's age in Trash, the delayed-send
        window); a scenario on simulated time passes its clock here instead of patching a running policy.
        `watch_backends`: a domain on Dovecot publishes its own clients' changes as they happen (one NOTIFY
        connection per user); off, they are published at the next read of the store or `wait_idle`.
        `tls_files`: the PEM files `tls` was made from (certificate chain, key: may be one file), which a domain
        on Dovecot needs to offer STARTTLS too."""
        self.config = config or default_config()
        self.clock = clock
        self.store_spec = store
        self.host = host
        self.port_base = port_base
        self.tls = tls
        self.tls_cafile = tls_cafile
        self.tls_handshake_timeout = tls_handshake_timeout
        self.transcripts = transcripts
        self.relay_connections = relay_connections
        self.imap_enabled = imap
        self.web_enabled = web
        self.web_port = web_port
        self.web_token = web_token
        self.watch_backends = watch_backends
        self.tls_files = tls_files
        self.web: Any = None  # recall_lab.harness.web.WebServer once started
        #: What every domain of the lab did (accepted, relayed, each policy's events): one feed, one order.
        self.activity = Activity()
        self._servers: dict[str, DomainServer] = {}
        self._stores: dict[str, MailStore] = {}
        self._backends: dict[str, Backend] = {}
        self._routes: dict[str, Route] = {}
        for domain, target in self.config.routes.items():
            host_, _, port = target.rpartition(":")
            self._routes[domain] = (host_, int(port))
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------------
    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        kind, root = parse_store_spec(self.store_spec)
        if self.web_enabled and self.web_token is None:
            from recall_lab.harness.web.server import is_loopback

            if not is_loopback(self.host):
                # refused before anything listens: no server of the lab is reachable from elsewhere by accident
                raise LabStartError(f"the web server would listen on {self.host}, which is not a loopback "
                                    "address: set a token explicitly (--web-token) to serve there")
        if self.tls is not None and self.tls_files is None and any(d.backend == "dovecot" for d in self.config.domains):
            raise LabStartError("a domain on Dovecot offers TLS only with the certificate's files (tls_files=, "
                                "or serve --tls auto / --tls-cert)")
        try:
            load_policy_modules(self.config.policy_modules)
        except ImportError as exc:
            raise LabStartError(f"cannot import policy module {exc.name or ''}: {exc}".replace(" :", ":")) from None
        guard = ConnectionGuard(self.config.limits)  # one for the lab: its caps count every listener
        try:
            for index, dc in enumerate(self.config.domains):
                spool_dir: Path | None = root / dc.name / "spool" if root is not None else None
                mail_dir = (root / dc.name / ("dovecot" if dc.backend == "dovecot" else "mail")
                            if root is not None else None)
                backend = await open_backend(dc, host=self.host, mail_dir=mail_dir,
                                             password_of=self._password_lookup(dc.name),
                                             watch=self.watch_backends, tls_files=self.tls_files)
                self._backends[dc.name] = backend
                store = backend.store
                self._stores[dc.name] = store
                spec = DomainSpec(name=dc.name, role=dc.role, users=dc.users, policies=dc.policies,
                                  pipeline=dc.pipeline, max_message_size=dc.max_message_size,
                                  faults=dc.faults, fault_seed=dc.fault_seed)
                server = DomainServer(spec, store, host=self.host, ports=self._ports(index), tls_context=self.tls,
                                      transcripts=self.transcripts, router=self._route, spool_dir=spool_dir,
                                      retry_delays=self.config.retry_delays,
                                      relay_connections=self.relay_connections, imap=self.imap_enabled,
                                      guard=guard, clock=self.clock, activity=self.activity,
                                      tls_handshake_timeout=self.tls_handshake_timeout,
                                      imap_elsewhere=backend.imap)
                self._servers[dc.name] = server
                await server.open()
            await self._start_capture(kind, root, guard)
            for server in self._servers.values():
                await server.run()
            if self.web_enabled:
                from recall_lab.harness.web import WebServer

                web = WebServer(self, host=self.host, port=self.web_port, token=self.web_token)
                await web.start()
                self.web = web
        except BaseException as exc:
            await self._teardown()
            from recall_lab.harness.web.server import WebError

            if isinstance(exc, ListenError | PolicySettingsError | WebError | BackendError):
                raise LabStartError(str(exc)) from None
            if isinstance(exc, StoreError | OSError):  # an unusable maildir (missing, a file, locked, no rights)
                raise LabStartError(f"cannot use store {self.store_spec}: {_reason(exc)}") from None
            raise
        self._started = True

    def _password_lookup(self, domain: str) -> Callable[[str], str | None]:
        """The password of one of the domain's accounts as its server knows it (for a Dovecot's user database)."""
        def lookup(user: str) -> str | None:
            server = self._servers.get(domain)
            if server is None or user not in server.accounts:
                return None
            return server.accounts[user]
        return lookup

    def backend(self, domain: str) -> str:
        """Who keeps the domain's mailboxes: "lab" (the lab's store and IMAP server) or "dovecot"."""
        return self.config.domain(domain).backend

    def _ports(self, index: int) -> Ports:
        if self.port_base is None:
            return Ports()
        base = self.port_base + PORTS_PER_DOMAIN * index
        return Ports(imap=base + PORT_OFFSETS["imap"], submission=base + PORT_OFFSETS["submission"],
                     mx=base + PORT_OFFSETS["mx"], imaps=base + PORT_OFFSETS["imaps"],
                     submissions=base + PORT_OFFSETS["submissions"])

    async def _start_capture(self, kind: str, root: Path | None, guard: ConnectionGuard) -> None:
        """Capture mode's listeners and store (when the config has [capture]), and the arrival log of every
        store (the helpers' `since=`). With `port_base`, the capture takes the block after the last domain's:
        IMAP at +0, SMTP at +1."""
        arrivals = ArrivalLog()
        self._arrivals = arrivals
        for name, store in self._stores.items():
            arrivals.watch(name, store)
        settings = self.config.capture
        if settings is None:
            return
        if kind == "maildir":
            assert root is not None
            store = open_store(f"maildir:{root / '_capture' / 'mail'}")
        else:
            store = open_store("memory")
        ports = (0, 0)
        if self.port_base is not None:
            base = self.port_base + PORTS_PER_DOMAIN * len(self.config.domains)
            ports = (base, base + 1)
        capture = CaptureServer(settings, store, host=self.host, imap_port=ports[0], smtp_port=ports[1],
                                tls_context=self.tls, transcripts=self.transcripts, guard=guard)
        self._capture = capture
        arrivals.watch("capture", store)
        await capture.open()

    async def stop(self) -> None:
        """Stop every server and close every store; safe to call twice."""
        self._started = False
        await self._teardown()

    async def _teardown(self) -> None:
        web, self.web = self.web, None
        if web is not None:
            with contextlib.suppress(Exception):
                await web.stop()
        servers = list(self._servers.values())
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop()
        capture, self._capture = self._capture, None
        if capture is not None:
            with contextlib.suppress(Exception):
                await capture.stop()
            with contextlib.suppress(Exception):
                capture.store.close()
        if self._arrivals is not None:
            self._arrivals.close()
        for store in self._stores.values():
            with contextlib.suppress(Exception):
                store.close()
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                await backend.close()
        self._servers.clear()
        self._stores.clear()
        self._backends.clear()

    # -- routing --------------------------------------------------------------------------------------
    def _route(self, domain: str) -> Route | None:
        server = self._servers.get(domain)
        if server is not None:
            return server.mx.host, server.mx.port
        return self._routes.get(domain)

    def set_route(self, domain: str, host: str, port: int) -> None:
        """Relay mail for `domain` (not one of the lab's) to host:port, e.g. a test's own SMTP server."""
        self._routes[domain.lower()] = (host, port)

    # -- what the lab offers --------------------------------------------------------------------------
    def _server(self, domain: str) -> DomainServer:
        try:
            return self._servers[domain.lower()]
        except KeyError:
            raise KeyError(f"no domain {domain!r} in this lab (has: {', '.join(self.domains)})") from None

    @property
    def domains(self) -> list[str]:
        return [d.name for d in self.config.domains]

    def imap(self, domain: str) -> Endpoint:
        endpoint = self._server(domain).imap
        if endpoint is None:
            raise RuntimeError(f"{domain} has no IMAP server in this lab")
        return endpoint

    def submission(self, domain: str) -> Endpoint:
        return self._server(domain).submission

    def mx(self, domain: str) -> Endpoint:
        return self._server(domain).mx

    def imaps(self, domain: str) -> Endpoint:
        """IMAP over implicit TLS (RFC 8314); only in a lab with TLS."""
        endpoint = self._server(domain).imaps
        if endpoint is None:
            raise RuntimeError(f"{domain} has no IMAPS server in this lab (it needs TLS)")
        return endpoint

    def submissions(self, domain: str) -> Endpoint:
        """Submission over implicit TLS (RFC 8314); only in a lab with TLS."""
        endpoint = self._server(domain).submissions
        if endpoint is None:
            raise RuntimeError(f"{domain} has no submission over implicit TLS in this lab (it needs TLS)")
        return endpoint

    def faults(self, domain: str) -> FaultSet:
        """The domain's injected faults: `.add("rcpt=450:next=3")`, `.clear()`, `.fired` (docs/faults.md)."""
        return self._server(domain).faults

    def users(self, domain: str) -> list[str]:
        server = self._servers.get(domain.lower())
        if server is not None:
            return list(server.accounts)
        return list(self.config.domain(domain).users)

    def password(self, user: str) -> str:
        address = user.strip().lower()
        server = self._servers.get(self.domain_of(address))
        if server is not None:
            return server.accounts[address]
        return self.config.domain(self.domain_of(address)).users[address]

    def add_user(self, address: str, password: str) -> str:
        """A new account in a running domain (IMAP and SMTP AUTH know it at once, its mailboxes exist);
        returns the address as stored. ValueError for a malformed address, KeyError for a foreign domain."""
        return self._server(self.domain_of(address)).add_user(address, password)

    def domain_of(self, user: str) -> str:
        domain = user.rpartition("@")[2].lower()
        if domain not in self.domains:
            raise KeyError(f"{user} is not a user of this lab")
        return domain

    def role(self, domain: str) -> str:
        return self.config.domain(domain).role

    def store(self, domain: str) -> MailStore:
        return self._server(domain).store

    def services(self, domain: str) -> DomainServices:
        return self._server(domain).services

    def audit_log(self, domain: str) -> list[dict[str, Any]]:
        return list(self._server(domain).services.audit_log)

    def server(self, domain: str) -> DomainServer:
        """The domain's server object (tests and benchmarks; harness code should not need it)."""
        return self._server(domain)

    def endpoints(self) -> dict[str, Any]:
        """The endpoints JSON: {"domains": {d: {"role", "starttls", "imap", "submission", "mx", "users"}}}.

        "starttls" is true when the lab has a TLS context: every port offers STARTTLS, and submission takes AUTH
        only after it (a client reading the file knows to upgrade first); each domain then also names "imaps"
        and "submissions" (implicit TLS), and a top-level "tls": {"cafile": ...} names the CA to trust (null
        when the lab was given a certificate without its CA)."""
        out: dict[str, Any] = {}
        for dc in self.config.domains:
            server = self._servers.get(dc.name)
            entry: dict[str, Any] = {"role": dc.role, "starttls": self.tls is not None, "backend": dc.backend}
            if server is not None:
                imap = server.imap
                if imap is not None:
                    entry["imap"] = imap.as_dict()
                entry["submission"] = server.submission.as_dict()
                entry["mx"] = server.mx.as_dict()
                imaps, submissions = server.imaps, server.submissions
                if imaps is not None:
                    entry["imaps"] = imaps.as_dict()
                if submissions is not None:
                    entry["submissions"] = submissions.as_dict()
            entry["users"] = dict(server.accounts) if server is not None else dict(dc.users)
            out[dc.name] = entry
        result: dict[str, Any] = {"domains": out}
        if self.tls is not None:
            result["tls"] = {"cafile": str(self.tls_cafile) if self.tls_cafile is not None else None}
        if self.web is not None:
            result["web"] = self.web.as_dict()
        if self._capture is not None:
            result["capture"] = self._capture.as_dict()
        return result

    # -- relay control --------------------------------------------------------------------------------
    def pause_relay(self, domain: str | None = None) -> None:
        for name in [domain] if domain else self.domains:
            self._server(name).relay.pause()

    def resume_relay(self, domain: str | None = None) -> None:
        for name in [domain] if domain else self.domains:
            self._server(name).relay.resume()

    def retry_relay_now(self, domain: str | None = None) -> None:
        for name in [domain] if domain else self.domains:
            self._server(name).relay.retry_now()

    def relay_pending(self, domain: str) -> list[RelayEntry]:
        return self._server(domain).relay.pending()

    async def wait_idle(self, timeout: float | None = 30.0, *, users: Iterable[str] | None = None) -> None:
        """Until no domain has a delivery in flight or a message in its relay queue (paused queues excepted).

        Lets tests await "the mail has arrived" without sleeping. A domain on another server (Dovecot) is
        first asked what its own IMAP clients changed (`MailStore.sync`): for `users` only, when given (a
        round trip each: a matrix names the trial's people, not the whole lab), else for every user.
        """
        wanted = None if users is None else {u.strip().lower() for u in users}

        async def settle() -> None:
            while True:
                for store in list(self._stores.values()):
                    if wanted is None:
                        store.sync()  # a store over a real server: publish what its own IMAP clients changed
                        continue
                    for user in wanted.intersection(store.users()):
                        store.sync(user)
                waited = False
                for server in list(self._servers.values()):
                    waited = await server.wait_idle() or waited
                if not waited:
                    return

        await asyncio.wait_for(settle(), timeout)


class BlockingLab:
    """A Lab in a loop of its own thread, for synchronous code; same attributes, plus `call`."""

    def __init__(self, config: LabConfig | None = None, **kwargs: Any) -> None:
        self._config = config
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.lab: Lab | None = None

    def __enter__(self) -> BlockingLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="recall-lab", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

        async def make() -> Lab:
            lab = Lab(self._config, **self._kwargs)
            await lab.start()
            return lab

        try:
            self.lab = self.call(make())
        except BaseException:
            self._shutdown_loop()
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            if self.lab is not None:
                self.call(self.lab.stop())
        finally:
            self.lab = None
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(drain(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._thread = None
        loop.close()

    def call(self, work: Coroutine[Any, Any, T] | Callable[[], T] | Awaitable[T],
             timeout: float | None = 60.0) -> T:
        """Run a coroutine (or a plain callable, e.g. a store method) in the lab's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the lab is not running")
        if asyncio.iscoroutine(work) or isinstance(work, Awaitable):
            coro = work

            async def wrapped() -> T:
                return await coro  # type: ignore[misc]
        else:
            fn = work

            async def wrapped() -> T:
                return fn()  # type: ignore[operator,return-value]

        future = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        # Wait first, then take the result: in Python >= 3.11 concurrent.futures.TimeoutError IS the builtin
        # TimeoutError, so catching it around future.result() would also swallow a TimeoutError raised by the
        # work itself and misreport it as the call timing out.
        concurrent.futures.wait([future], timeout)
        if not future.done():
            future.cancel()
            raise TimeoutError(f"lab call did not finish in {timeout} s")
        return future.result()

    def wait_idle(self, timeout: float = 30.0) -> None:
        assert self.lab is not None
        self.call(self.lab.wait_idle(timeout), timeout + 5)

    def __getattr__(self, name: str) -> Any:
        # endpoints(), imap(), submission(), mx(), users(), password(), domain_of(), role(), store(),
        # services(), audit_log(), domains, pause_relay()... are the Lab's (read-only or loop-safe) ones.
        lab = self.__dict__.get("lab")
        if lab is None:
            raise AttributeError(name)
        attr = getattr(lab, name)
        if name in ("pause_relay", "resume_relay", "retry_relay_now", "set_route",
                    "messages", "message", "find", "latest", "clear"):  # the mail helpers read the stores
            return lambda *a, **kw: self.call(lambda: attr(*a, **kw))
        if name == "wait_for":
            return lambda *a, **kw: self.call(attr(*a, **kw), kw.get("timeout", 5.0) + 5)
        return attr
