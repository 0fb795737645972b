"""The live web client emulator: today's Outlook on the web, a page that keeps listening to its server.

Why a second web client: the article's web client renders a page once and shows it until the next load
(`clients/web.py`, the static view). A web client of today keeps a push channel open and drops a message the
moment the server removes it. The lab's webmail has such a view (`view=live`, harness/web/webmail.py): its page
listens to `GET /mail/events`, server-sent events fed by an IMAP IDLE connection (harness/web/mail_events.py).
This emulator is that page without a browser: it logs in (the login cookie), loads the folder's list once, then
holds the event stream with aiohttp and applies each event as the page's script does: `vanished` drops the
rows (and an opened message becomes "recalled by the sender"), `new` and `resync` reload the list, `lost`
reconnects. What it "shows" is the last list it has.

Waiting: the stream gives no acknowledgement, so a caller that knows what the server holds waits for the page to
agree (`wait_until_shown` / `wait_until_gone`): every applied event wakes the waiters, so nothing polls. Microsoft
documents no live update of the open page (docs/recall-sources.md section 5); the lab's live view stands for
web clients that keep a connection to their server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

from recall_lab.harness.clients.cache import normalise_mid
from recall_lab.harness.clients.web import (
    SESSION_COOKIE,
    ListedPage,
    ListEntry,
    MessageGone,
    WebClientError,
    message_ref,
    parse_listing,
)

#: Seconds before the emulator reconnects after a `lost` event or a dropped stream (the page's `retry:`).
RECONNECT_DELAY = 0.05


class LiveWebClient(ListedPage):
    """One user's folder open in the webmail's live view; see the module docstring.

    `web_url`: the lab's web server (`lab.web.url`)."""

    def __init__(self, user: str, password: str, web_url: str, *, folder: str = "INBOX", name: str = "live web page",
                 timeout: float = 10.0) -> None:
        self.user = user.strip().lower()
        self.password = password
        self.web_url = str(web_url).rstrip("/")
        self.folder = folder
        self.name = name
        self.timeout = timeout
        self.listing: list[ListEntry] = []
        self.opened: dict[str, int] = {}  # normalised Message-ID -> UID of messages open in the page
        self.recalled_notices: list[str] = []  # Message-IDs an open message was replaced by "recalled" for
        self.events: list[tuple[str, dict[str, Any]]] = []  # (event, data) as received
        self.page_loads = 0
        self._cookie: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._closing = False
        self.error: BaseException | None = None

    # --- what the page shows --------------------------------------------------------------------------------

    def has_message_id(self, message_id: str) -> bool:
        """Shown by the page: in the list, or open (an open message that vanished shows the recall notice)."""
        return self.in_listing(message_id) or normalise_mid(message_id) in self.opened

    def snapshot_visible(self, message_id: str) -> bool:
        """Open in the page (what the static client calls its snapshot)."""
        return normalise_mid(message_id) in self.opened

    @property
    def listening(self) -> bool:
        return self._reader is not None and not self._reader.done() and self._ready.is_set()

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout,
                                                                             sock_connect=self.timeout),
                                               headers={"Origin": self.web_url})
        return self._http

    async def _login(self) -> None:
        form = {"address": self.user, "password": self.password, "view": "live"}
        try:
            async with self._session().post(f"{self.web_url}/mail/login", data=form, allow_redirects=False,
                                            timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                cookie = response.cookies.get(SESSION_COOKIE)
                if response.status != 303 or cookie is None:
                    raise WebClientError(f"the webmail refused the login of {self.user} (HTTP {response.status})")
                self._cookie = cookie.value
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WebClientError(f"cannot reach the webmail at {self.web_url}: {exc or type(exc).__name__}") \
                from exc

    async def _get(self, path: str, params: dict[str, str | int]) -> tuple[int, str]:
        if self._cookie is None:
            await self._login()
        url = f"{self.web_url}{path}?{urlencode(params)}"
        try:
            async with self._session().get(url, allow_redirects=False,
                                           headers={"Cookie": f"{SESSION_COOKIE}={self._cookie}"},
                                           timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WebClientError(f"cannot reach the webmail at {self.web_url}: {exc or type(exc).__name__}") \
                from exc

    async def _load_list(self) -> None:
        status, html = await self._get("/mail/", {"folder": self.folder, "view": "live", "fragment": "list"})
        if status != 200:
            raise WebClientError(f"the webmail answered HTTP {status} for {self.user}'s {self.folder}")
        self.listing = parse_listing(html)
        self.page_loads += 1
        await self._wake()

    # --- life -----------------------------------------------------------------------------------------------

    async def start(self) -> LiveWebClient:
        """Log in, load the list, open the event stream; returns once the stream said `ready`. A start that fails
        closes what it opened (the HTTP session), so a failed trial leaves no socket behind."""
        try:
            await self._login()
            await self._load_list()
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._listen(), name=f"live web page of {self.user}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait({ready, self._reader}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set():
            await self.close()
            raise WebClientError(f"the live stream of {self.user}'s {self.folder} did not start: "
                                 f"{self.error or 'no answer'}")
        return self

    async def close(self) -> None:
        """Close the page: the stream ends (the webmail drops its IMAP connection)."""
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _listen(self) -> None:
        """Hold the stream; reconnect (and reload the list) after `lost` or a dropped connection."""
        while not self._closing:
            try:
                await self._stream_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded; a page retries as a browser does
                self.error = exc
            if self._closing:
                return
            self._ready.clear()
            await asyncio.sleep(RECONNECT_DELAY)  # the page's `retry:` delay before reconnecting, not a wait

    async def _stream_once(self) -> None:
        if self._cookie is None:
            await self._login()
        url = f"{self.web_url}/mail/events?{urlencode({'folder': self.folder})}"
        async with self._session().get(url, headers={"Cookie": f"{SESSION_COOKIE}={self._cookie}",
                                                     "Accept": "text/event-stream"}) as response:
            if response.status == 401:
                self._cookie = None
                raise WebClientError("the webmail session ended")
            if response.status != 200:
                raise WebClientError(f"the webmail refused the event stream (HTTP {response.status})")
            event, data = "message", []
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        if await self._apply(event, "\n".join(data)) == "lost":
                            return
                    event, data = "message", []
                elif line.startswith(":"):
                    continue  # keepalive comment
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)

    async def _apply(self, event: str, text: str) -> str:
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        self.events.append((event, data))
        if event == "ready":
            await self._load_list()  # what vanished while the page was not listening leaves now
            self._ready.set()
        elif event == "vanished":
            gone = {int(u) for u in data.get("uids", ()) if isinstance(u, int)}
            for entry in [e for e in self.listing if e.uid in gone]:
                self.listing.remove(entry)
            for key, uid in list(self.opened.items()):
                if uid in gone:
                    del self.opened[key]
                    self.recalled_notices.append(key)  # "This message was recalled by the sender"
            await self._wake()
        elif event in ("new", "resync"):
            await self._load_list()
        elif event == "flags":
            uid = data.get("uid")
            self.listing = [ListEntry(e.uid, e.message_id, e.subject, e.sender, e.preview, bool(data.get("seen")))
                            if e.uid == uid else e for e in self.listing]
            await self._wake()
        elif event == "lost":
            return "lost"
        return event

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- waiting for the page to agree with the server --------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until `predicate()` holds, re-checked after every applied event; False when `timeout` passed."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                async with self._changed:
                    await self._changed.wait_for(predicate)
            return True
        except TimeoutError:
            return False

    async def wait_until_shown(self, message_id: str, timeout: float | None = None) -> bool:
        return await self.wait_for(lambda: self.in_listing(message_id), timeout)

    async def wait_until_gone(self, message_id: str, timeout: float | None = None) -> bool:
        return await self.wait_for(lambda: not self.has_message_id(message_id), timeout)

    # --- what a user does -------------------------------------------------------------------------------------

    async def open(self, message_id: str) -> str:
        """The user clicks the message: GET its page (FETCH BODY[] sets \\Seen); it stays open in the page."""
        entry = self._entry(message_id)
        params: dict[str, str | int] = {"folder": self.folder, "view": "live", **message_ref(entry, message_id)}
        status, html = await self._get("/mail/message", params)
        if status == 404:
            raise MessageGone(f"{message_id} is no longer in {self.user}'s {self.folder} (item not found)")
        if status != 200:
            raise WebClientError(f"the webmail answered HTTP {status} opening {message_id}")
        if entry is not None:
            self.opened[normalise_mid(message_id)] = entry.uid
        return html

    async def move(self, message_id: str, folder: str) -> None:
        raise WebClientError("the live web emulator does not move messages")

    async def page_load(self) -> list[ListEntry]:
        """A reload: the list again (the stream keeps running)."""
        await self._load_list()
        return self.listing
