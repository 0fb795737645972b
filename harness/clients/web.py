"""The web client emulator: a browser on the lab's webmail (/mail/, static view), like Outlook on the web.

Why it behaves this way: a web page is rendered once and then just sits in the browser. Between page loads
nothing is pushed, so a message recalled on the server stays on the screen (in the list, and as the rendered
message if it was open) until the page is loaded again. The client never processes recalls: the recall
instruction is just one more message in the list.

Why an HTTP client of the webmail and not an IMAP client of its own: the page it holds is the page the lab's
webmail really sent (`harness/web/webmail.py`, view=static, no script), so what the emulator "shows" is what a
person's browser would show. One page load is one GET of /mail/; opening a message is one GET of its page (the
webmail's FETCH BODY[] sets \\Seen; 404 "item not found" when it is gone); a move posts the webmail's move form.
The HTML is read with the standard library's html.parser (rows carry data-uid and data-message-id).

State lives under `state_dir/<name>/`: `index.html` (the list as last sent), one `<key>.html` per opened
message (key: a hash of the Message-ID) and `opened.json` (what the user has opened, kept across restarts).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from recall_lab.harness.clients.cache import normalise_mid
from recall_lab.harness.clients.preview import Preview

#: The webmail's session cookie (harness/web/mail_session.py).
SESSION_COOKIE = "recall_lab_mail"


class MessageGone(LookupError):
    """The user clicked a message the server no longer has (Outlook on the web: "item not found")."""


class WebClientError(Exception):
    """The webmail could not be used: refused the login, unreachable, or answered with an error page."""


@dataclass(frozen=True)
class ListEntry:
    uid: int
    message_id: str | None
    subject: str
    sender: str
    preview: str
    seen: bool


def snapshot_key(message_id: str) -> str:
    return hashlib.sha256(normalise_mid(message_id).encode()).hexdigest()[:24]


class _ListParser(HTMLParser):
    """The rows of the webmail's message list: `<li class="msg read|unread" data-uid data-message-id>` holding
    spans of class from, subject and preview."""

    FIELDS = ("from", "subject", "preview")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: list[ListEntry] = []
        self._row: dict[str, str] | None = None
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "li" and "msg" in classes and a.get("data-uid", "").isdigit():
            self._row = {"uid": a["data-uid"], "mid": a.get("data-message-id", ""),
                         "seen": "1" if "read" in classes else "", "from": "", "subject": "", "preview": ""}
        elif tag == "span" and self._row is not None:
            self._field = next((c for c in classes if c in self.FIELDS), None)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._field = None
        elif tag == "li" and self._row is not None:
            r = self._row
            self.entries.append(ListEntry(int(r["uid"]), r["mid"] or None, r["subject"].strip(), r["from"].strip(),
                                          r["preview"].strip(), bool(r["seen"])))
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._field is not None:
            self._row[self._field] += data


def parse_listing(html: str) -> list[ListEntry]:
    parser = _ListParser()
    parser.feed(html)
    parser.close()
    return parser.entries


class ListedPage:
    """What a page shows of its message list (`listing`, the rows as last rendered), shared by the static page
    (WebClient) and the live one (live_web.LiveWebClient)."""

    listing: list[ListEntry]

    def _entry(self, message_id: str) -> ListEntry | None:
        key = normalise_mid(message_id)
        return next((e for e in self.listing if e.message_id and normalise_mid(e.message_id) == key), None)

    def in_listing(self, message_id: str) -> bool:
        return self._entry(message_id) is not None

    def preview(self, message_id: str) -> Preview | None:
        e = self._entry(message_id)
        return Preview(e.subject, e.preview, e.sender) if e is not None else None


def message_ref(entry: ListEntry | None, message_id: str) -> dict[str, str]:
    """How a request names a message: the UID the rendered list links to, else its Message-ID."""
    return {"uid": str(entry.uid)} if entry is not None else {"message_id": message_id}


class WebClient(ListedPage):
    """A browser showing one user's folder in the lab's webmail; see the module docstring and docs/clients.md.

    `web_url`: the lab's web server (`lab.web.url`, e.g. "http://127.0.0.1:8025")."""

    def __init__(self, user: str, password: str, web_url: str, state_dir: Path | str, *, folder: str = "INBOX",
                 name: str = "web", timeout: float = 10.0) -> None:
        self.user = user.strip().lower()
        self.password = password
        self.web_url = str(web_url).rstrip("/")
        self.folder = folder
        self.name = name
        self.timeout = timeout
        self.root = Path(state_dir) / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.listing: list[ListEntry] = []
        self.page_loads = 0
        self._cookie: str | None = None
        self._opened: dict[str, str] = self._load_opened()  # snapshot key -> Message-ID

    # --- state on disk ---------------------------------------------------------------------------------------

    def _load_opened(self) -> dict[str, str]:
        try:
            mids = json.loads((self.root / "opened.json").read_text())
        except (OSError, ValueError):
            return {}
        return {snapshot_key(m): m for m in mids if isinstance(m, str)}

    def _save_opened(self) -> None:
        (self.root / "opened.json").write_text(json.dumps(sorted(self._opened.values())))

    def snapshot_path(self, message_id: str) -> Path:
        return self.root / f"{snapshot_key(message_id)}.html"

    def snapshot_visible(self, message_id: str) -> bool:
        return self.snapshot_path(message_id).exists()

    @property
    def index_path(self) -> Path:
        return self.root / "index.html"

    # --- what the page shows ---------------------------------------------------------------------------------


    def has_message_id(self, message_id: str) -> bool:
        """Visible on the page as last rendered: in the list, or as an opened message's snapshot."""
        return self.in_listing(message_id) or self.snapshot_visible(message_id)


    # --- HTTP -------------------------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        # a session per action: the emulator has no close() in its contract, and nothing stays open between
        # page loads, as in a browser tab that just sits there
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                     headers={"Origin": self.web_url})

    async def _login(self, http: aiohttp.ClientSession) -> None:
        form = {"address": self.user, "password": self.password, "view": "static"}
        async with http.post(f"{self.web_url}/mail/login", data=form, allow_redirects=False) as response:
            cookie = response.cookies.get(SESSION_COOKIE)
            if response.status != 303 or cookie is None:
                raise WebClientError(f"the webmail refused the login of {self.user} (HTTP {response.status})")
            self._cookie = cookie.value

    async def _request(self, method: str, path: str, *, params: dict[str, str | int] | None = None,
                       form: dict[str, str] | None = None) -> tuple[int, str]:
        """One request as the logged-in user (logging in first, and again once if the session has ended)."""
        url = f"{self.web_url}{path}" + ("?" + urlencode(params) if params else "")
        try:
            async with self._session() as http:
                for attempt in (1, 2):
                    if self._cookie is None:
                        await self._login(http)
                    async with http.request(method, url, data=form, allow_redirects=False,
                                            headers={"Cookie": f"{SESSION_COOKIE}={self._cookie}"}) as response:
                        text = await response.text()
                        if response.status == 401 and attempt == 1:
                            self._cookie = None  # the session ended (idle lifetime, webmail restarted)
                            continue
                        return response.status, text
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WebClientError(f"cannot reach the webmail at {self.web_url}: {exc or type(exc).__name__}") \
                from exc
        raise AssertionError("unreachable")

    # --- the three things a browser does ---------------------------------------------------------------------

    async def page_load(self) -> list[ListEntry]:
        """GET the folder's page (view=static); keep the HTML as sent; drop snapshots of messages gone."""
        status, html = await self._request("GET", "/mail/", params={"folder": self.folder, "view": "static"})
        if status != 200:
            raise WebClientError(f"the webmail answered HTTP {status} for {self.user}'s {self.folder}")
        entries = parse_listing(html)
        self.listing = entries
        self.page_loads += 1
        self.index_path.write_text(html, encoding="utf-8")
        listed = {normalise_mid(e.message_id) for e in entries if e.message_id}
        for key, mid in self._opened.items():
            if normalise_mid(mid) not in listed:
                (self.root / f"{key}.html").unlink(missing_ok=True)  # gone from the server: gone from the page
        return entries

    async def open(self, message_id: str) -> Path:
        """The user clicks the message: GET its page (the webmail's FETCH BODY[] sets \\Seen); keep the HTML."""
        entry = self._entry(message_id)
        params = {"folder": self.folder, "view": "static", **message_ref(entry, message_id)}
        status, html = await self._request("GET", "/mail/message", params=params)
        if status == 404:
            raise MessageGone(f"{message_id} is no longer in {self.user}'s {self.folder} (item not found)")
        if status != 200:
            raise WebClientError(f"the webmail answered HTTP {status} opening {message_id}")
        key = snapshot_key(message_id)
        self._opened[key] = message_id
        self._save_opened()
        path = self.snapshot_path(message_id)
        path.write_text(html, encoding="utf-8")
        self.listing = [replace(e, seen=True) if e is entry else e for e in self.listing]
        return path

    async def move(self, message_id: str, folder: str) -> None:
        """Post the webmail's move form (what a drag in the page does); the page shows it at next load."""
        form = {"folder": self.folder, "target": folder, "view": "static",
                **message_ref(self._entry(message_id), message_id)}
        status, _ = await self._request("POST", "/mail/move", form=form)
        if status == 404:
            raise MessageGone(f"{message_id} is no longer in {self.user}'s {self.folder}")
        if status != 303:
            raise WebClientError(f"the webmail refused to move {message_id} to {folder} (HTTP {status})")
