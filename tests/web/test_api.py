"""The HTTP API at /api/v1/ over real sockets: a lab per test, mail sent over SMTP submission, read with aiohttp.

Every endpoint is exercised with its errors (401 without or with a wrong token, 400 for bad parameters and
bodies, 404, 409), Message-IDs that need escaping in a path, the long poll (woken by mail arriving, 408 on
timeout, ended when the lab stops), purge, recalls with their parsed reports, and the OpenAPI description
against the app's routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import quote

import aiohttp
import aiosmtplib
import pytest

from recall_lab.harness.lab import Lab
from recall_lab.harness.own_name import client_name
from recall_lab.harness.recall_agent import RecallAgent
from recall_lab.harness.web.openapi import describe

ALICE, BOB, CAROL = "alice@corp.example", "bob@corp.example", "carol@corp.example"
DAVE = "dave@mail.example"
TIMEOUT = 10.0


class Api:
    """An aiohttp session on the lab's API with the token set."""

    def __init__(self, lab: Lab, session: aiohttp.ClientSession) -> None:
        self.lab = lab
        self.session = session
        self.base = lab.web.url
        self.auth = {"Authorization": f"Bearer {lab.web.token}"}

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[int, Any]:
        hdrs = self.auth if headers is None else headers
        async with self.session.request(method, self.base + path, headers=hdrs, **kw) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with Lab() as lab, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield Api(lab, session)


async def send(lab: Lab, *, to: list[str], subject: str = "Quarterly numbers", body: str = "The numbers.\n",
               cc: list[str] | None = None, sender: str = ALICE, message_id: str | None = None,
               html: str | None = None, attachment: bytes | None = None, settle: bool = True) -> str:
    msg = EmailMessage()
    msg["From"] = f"Alice Example <{sender}>"
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Message-ID"] = mid = message_id or make_msgid(domain="corp.example")
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="figures.pdf")
    ep = lab.submission(sender.partition("@")[2])
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=sender, password=lab.password(sender),
                          start_tls=False, timeout=TIMEOUT, local_hostname=client_name(sender),
                          recipients=[*to, *(cc or [])])
    if settle:
        await lab.wait_idle()
    return mid


def path_id(mid: str) -> str:
    return quote(mid, safe="")


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) >= {"error", "message"}, body
    for word in words:
        assert word in body["message"], body


# --- the description and the door ----------------------------------------------------------------------------


async def test_index_lists_links_and_domains(api: Api) -> None:
    status, body = await api.get("/api/v1/")
    assert status == 200
    assert [d["name"] for d in body["domains"]] == ["corp.example", "mail.example"]
    assert body["domains"][0]["role"] == "organisation" and BOB in body["domains"][0]["users"]
    assert body["links"]["openapi"] == "/api/v1/openapi.json"


async def test_openapi_describes_exactly_the_apps_routes(api: Api) -> None:
    status, doc = await api.get("/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    routed = {(r.method, r.resource.canonical) for r in api.lab.web.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/v1/") and r.method != "HEAD"}
    assert described == routed
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    assert doc["servers"] == [{"url": api.lab.web.url}]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == \
                {"$ref": "#/components/schemas/Error"}, (method, path)
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == ({"message_id"} if "{message_id}" in path else set()), (method, path)
    # every $ref resolves
    text = str(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text or name in ("Error",)
    assert describe() == {k: v for k, v in doc.items() if k != "servers"}


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/"), ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/users"), ("POST", "/api/v1/users"),
    ("GET", f"/api/v1/messages?user={BOB}"), ("DELETE", "/api/v1/messages?user=*"),
    ("GET", f"/api/v1/messages/x@y?user={BOB}"), ("DELETE", f"/api/v1/messages/x@y?user={BOB}"),
    ("GET", f"/api/v1/messages/x@y/raw?user={BOB}"), ("GET", f"/api/v1/wait?user={BOB}&timeout=0"),
    ("GET", "/api/v1/recalls"), ("GET", "/api/v1/recalls/x@y"), ("GET", "/api/v1/events"),
])
async def test_every_endpoint_needs_the_token(api: Api, method: str, path: str) -> None:
    status, body = await api.call(method, path, headers={})
    assert_error(status, body, 401, "missing token")
    status, body = await api.call(method, path, headers={"Authorization": "Bearer not-the-token-at-all"})
    assert_error(status, body, 401, "wrong token")
    status, body = await api.call(method, path, headers={"Authorization": f"Basic {api.lab.web.token}"})
    assert_error(status, body, 401)


# --- users ---------------------------------------------------------------------------------------------------


async def test_users_list_with_counts_and_domain_filter(api: Api) -> None:
    await send(api.lab, to=[BOB])
    status, body = await api.get("/api/v1/users")
    assert status == 200
    by = {u["address"]: u for u in body["users"]}
    assert set(by) == {ALICE, BOB, CAROL, DAVE, "erin@mail.example"}
    assert by[BOB]["domain"] == "corp.example" and by[BOB]["role"] == "organisation"
    assert by[BOB]["folders"]["INBOX"] == {"messages": 1, "unseen": 1}
    assert by[ALICE]["folders"]["Sent"]["messages"] == 1
    status, body = await api.get("/api/v1/users?domain=mail.example")
    assert [u["address"] for u in body["users"]] == [DAVE, "erin@mail.example"]
    assert_error(*await api.get("/api/v1/users?domain=nowhere.example"), 404, "nowhere.example")


async def test_add_user_and_its_errors(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/users", json={"address": "Frank@corp.example",
                                                                 "password": "frank-password"})
    assert status == 201, body
    assert body["address"] == "frank@corp.example" and "INBOX" in body["folders"]
    assert api.lab.password("frank@corp.example") == "frank-password"
    # the new account can submit at once
    await send(api.lab, to=[BOB], sender="frank@corp.example", subject="from frank")
    status, listed = await api.get(f"/api/v1/messages?user={BOB}&q=subject:frank")
    assert listed["count"] == 1

    post = "/api/v1/users"
    assert_error(*await api.call("POST", post, json={"address": "frank@corp.example", "password": "x"}), 409,
                 "exists")
    assert_error(*await api.call("POST", post, data=b"{not json"), 400, "not JSON")
    assert_error(*await api.call("POST", post, data=b"\xff\xfe"), 400, "not JSON")
    assert_error(*await api.call("POST", post, json=["a", "b"]), 400, "object")
    assert_error(*await api.call("POST", post, json={"address": "gina@corp.example"}), 400, "password")
    assert_error(*await api.call("POST", post, json={"address": 3, "password": "p"}), 400, "address")
    assert_error(*await api.call("POST", post, json={"address": "no-at-sign", "password": "p"}), 400,
                 "not an address")
    assert_error(*await api.call("POST", post, json={"address": "a b@corp.example", "password": "p"}), 400,
                 "not an address")
    assert_error(*await api.call("POST", post, json={"address": "gina@corp.example", "password": "a\nb"}), 400,
                 "password")
    assert_error(*await api.call("POST", post, json={"address": "gina@elsewhere.example", "password": "p"}),
                 404, "elsewhere.example")


# --- messages ------------------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_summaries(api: Api) -> None:
    first = await send(api.lab, to=[BOB], subject="first", body="alpha text\n")
    second = await send(api.lab, to=[BOB], cc=[CAROL], subject="second", body="beta " * 100)
    status, body = await api.get(f"/api/v1/messages?user={BOB}")
    assert status == 200
    assert [m["message_id"] for m in body["messages"]] == [second, first]
    assert (body["user"], body["folder"], body["offset"], body["limit"], body["count"], body["more"]) == \
        (BOB, "INBOX", 0, 50, 2, False)
    top = body["messages"][0]
    assert set(top) == {"message_id", "uid", "folder", "subject", "from", "to", "cc", "date", "received", "size",
                        "flags", "seen", "snippet"}
    assert top["from"] == {"name": "Alice Example", "address": ALICE}
    assert top["to"] == [{"name": "", "address": BOB}] and top["cc"] == [{"name": "", "address": CAROL}]
    assert top["folder"] == "INBOX" and top["seen"] is False and top["flags"] == []
    assert top["snippet"].startswith("beta beta") and len(top["snippet"]) <= 201
    assert top["date"] is not None and top["size"] > 0

    status, page = await api.get(f"/api/v1/messages?user={BOB}&limit=1&offset=0")
    assert [m["subject"] for m in page["messages"]] == ["second"] and page["more"] is True
    status, page = await api.get(f"/api/v1/messages?user={BOB}&limit=1&offset=1")
    assert [m["subject"] for m in page["messages"]] == ["first"] and page["more"] is False
    status, sent = await api.get(f"/api/v1/messages?user={ALICE}&folder=Sent")
    assert sent["count"] == 2
    status, inbox = await api.get(f"/api/v1/messages?user={ALICE}")
    assert inbox["count"] == 0


async def test_search_language(api: Api) -> None:
    await send(api.lab, to=[BOB], subject="Budget draft", body="the figures for March\n")
    await send(api.lab, to=[BOB], cc=[CAROL], subject="Lunch", body="Pizza at noon?\n", attachment=b"%PDF-1.4")
    await send(api.lab, to=[BOB], subject="Weekly", body="plain part\n",
               html="<p>Meeting <b>moved</b> to Thursday</p><script>nothing()</script>")
    store = api.lab.store("corp.example")
    [lunch] = [r for r in store.messages(BOB, "INBOX") if r.uid == 2]
    store.store_flags(BOB, "INBOX", [lunch.uid], ["\\Seen"], "add")

    async def subjects(q: str, user: str = BOB, folder: str = "INBOX") -> list[str]:
        status, body = await api.get("/api/v1/messages", params={"user": user, "q": q, "folder": folder})
        assert status == 200, body
        return [m["subject"] for m in body["messages"]]

    assert await subjects("figures march") == ["Budget draft"]
    assert await subjects("FIGURES") == ["Budget draft"]
    assert await subjects("figures pizza") == []
    assert await subjects('"pizza at noon"') == ["Lunch"]
    assert await subjects('"noon pizza"') == []
    assert await subjects("subject:budget") == ["Budget draft"]
    assert await subjects("to:carol") == ["Lunch"]
    assert await subjects("from:alice") == ["Weekly", "Lunch", "Budget draft"]
    assert await subjects('from:"alice example"') == ["Weekly", "Lunch", "Budget draft"]
    assert await subjects("from:bob") == []
    assert await subjects("is:seen") == ["Lunch"]
    assert await subjects("is:unread") == ["Weekly", "Budget draft"]
    assert await subjects("has:attachment") == ["Lunch"]
    assert await subjects("carol@corp.example") == ["Lunch"]
    assert await subjects("") == ["Weekly", "Lunch", "Budget draft"]
    assert await subjects("subject:lunch", user=ALICE, folder="*") == ["Lunch"]
    assert await subjects("subject:lunch", user=ALICE) == []

    for q, word in [("colour:red", "colour:"), ('"open', "unbalanced quote"), ("is:flagged", "is:flagged"),
                    ("has:pictures", "has:pictures"), ("subject:", "needs a value")]:
        status, body = await api.get("/api/v1/messages", params={"user": BOB, "q": q})
        assert_error(status, body, 400, "bad query", word)


async def test_list_errors(api: Api) -> None:
    assert_error(*await api.get("/api/v1/messages"), 400, "user")
    assert_error(*await api.get("/api/v1/messages?user=nobody@corp.example"), 404, "nobody@corp.example")
    assert_error(*await api.get("/api/v1/messages?user=bob@nowhere.example"), 404, "bob@nowhere.example")
    assert_error(*await api.get(f"/api/v1/messages?user={BOB}&folder=Nope"), 404, "Nope")
    for bad in ("0", "1001", "abc", "1.5", "-3"):
        assert_error(*await api.get(f"/api/v1/messages?user={BOB}&limit={bad}"), 400, "limit")
    assert_error(*await api.get(f"/api/v1/messages?user={BOB}&offset=-1"), 400, "offset")
    assert_error(*await api.call("PUT", f"/api/v1/messages?user={BOB}"), 405)


ODD_IDS = ["<a/b+c%41?d#e&f=g@corp.example>", "<with.dots..and$dollar@corp.example>",
           "<a!~{}|^`=+$&'*@[127.0.0.1]>", "<%2F..%2e%2e/raw@corp.example>"]


@pytest.mark.parametrize("mid", ODD_IDS)
async def test_message_by_odd_message_id(api: Api, mid: str) -> None:
    await send(api.lab, to=[BOB], message_id=mid, subject="odd")
    status, body = await api.get(f"/api/v1/messages/{path_id(mid)}?user={BOB}")
    assert status == 200, body
    assert body["message_id"] == mid and body["subject"] == "odd"
    status, bare = await api.get(f"/api/v1/messages/{path_id(mid[1:-1])}?user={BOB}")
    assert status == 200 and bare["uid"] == body["uid"]
    status, raw = await api.get(f"/api/v1/messages/{path_id(mid)}/raw?user={BOB}")
    assert status == 200 and b"Subject: odd" in raw
    status, gone = await api.call("DELETE", f"/api/v1/messages/{path_id(mid)}?user={BOB}")
    assert status == 200 and gone["deleted"] == [{"folder": "INBOX", "uid": body["uid"]}]


async def test_message_detail_and_raw(api: Api) -> None:
    mid = await send(api.lab, to=[BOB], cc=[CAROL], subject="Weekly", body="plain words\n",
                     html='<p>Hello <img src="http://tracker.example/x.gif"> there</p>', attachment=b"%PDF-1.4 x")
    status, body = await api.get(f"/api/v1/messages/{path_id(mid)}?user={BOB}")
    assert status == 200, body
    assert body["subject"] == "Weekly" and body["text"] == "plain words\n"
    assert 'src="http://tracker.example/x.gif"' in body["html"]  # as sent: the API does not sanitise
    assert body["attachments"] == [{"filename": "figures.pdf", "content_type": "application/pdf", "size": 10}]
    names = [h[0].lower() for h in body["headers"]]
    assert names.index("received") < names.index("subject")
    assert ["Subject", "Weekly"] in body["headers"]
    assert body["locations"] == [{"folder": "INBOX", "uid": 1}] and body["folder"] == "INBOX"
    assert body["seen"] is False  # reading through the API does not set \Seen
    assert "\\Seen" not in api.lab.store("corp.example").messages(BOB, "INBOX")[0].flags

    status, raw = await api.get(f"/api/v1/messages/{path_id(mid)}/raw?user={BOB}")
    assert status == 200
    assert raw == api.lab.store("corp.example").fetch_raw(BOB, "INBOX", 1)
    async with api.session.get(f"{api.base}/api/v1/messages/{path_id(mid)}/raw?user={BOB}",
                               headers=api.auth) as resp:
        assert resp.content_type == "message/rfc822"

    status, sent = await api.get(f"/api/v1/messages/{path_id(mid)}?user={ALICE}&folder=Sent")
    assert status == 200 and sent["folder"] == "Sent"
    assert_error(*await api.get(f"/api/v1/messages/{path_id(mid)}?user={ALICE}&folder=INBOX"), 404, mid)
    assert_error(*await api.get(f"/api/v1/messages/{path_id(mid)}?user={DAVE}"), 404)
    assert_error(*await api.get(f"/api/v1/messages/{path_id('<none@corp.example>')}?user={BOB}"), 404)
    assert_error(*await api.get(f"/api/v1/messages/{path_id('<none@corp.example>')}/raw?user={BOB}"), 404)
    assert_error(*await api.get(f"/api/v1/messages/{path_id('two words')}?user={BOB}"), 400, "Message-ID")
    assert_error(*await api.get(f"/api/v1/messages/{path_id(mid)}"), 400, "user")


async def test_delete_one_message_in_every_folder_or_one(api: Api) -> None:
    mid = await send(api.lab, to=[ALICE, BOB])  # alice has it in INBOX and Sent
    status, body = await api.call("DELETE", f"/api/v1/messages/{path_id(mid)}?user={ALICE}&folder=Sent")
    assert status == 200 and body == {"user": ALICE, "message_id": mid, "count": 1,
                                      "deleted": [{"folder": "Sent", "uid": 1}]}
    status, body = await api.call("DELETE", f"/api/v1/messages/{path_id(mid)}?user={ALICE}")
    assert status == 200 and body["deleted"] == [{"folder": "INBOX", "uid": 1}]
    assert_error(*await api.call("DELETE", f"/api/v1/messages/{path_id(mid)}?user={ALICE}"), 404)
    assert api.lab.store("corp.example").find_by_message_id(BOB, mid)  # bob's copy is his


async def test_purge_a_folder_all_folders_and_everyone(api: Api) -> None:
    for n in range(3):
        await send(api.lab, to=[BOB, DAVE], subject=f"m{n}")
    status, body = await api.call("DELETE", f"/api/v1/messages?user={BOB}")
    assert status == 200 and body == {"deleted": 3, "users": {BOB: {"INBOX": 3}}}
    status, body = await api.call("DELETE", f"/api/v1/messages?user={ALICE}&folder=*")
    assert body["deleted"] == 3 and body["users"][ALICE]["Sent"] == 3
    status, body = await api.call("DELETE", "/api/v1/messages?user=*&folder=*")
    assert status == 200 and body["deleted"] == 3 and body["users"][DAVE]["INBOX"] == 3
    status, users = await api.get("/api/v1/users")
    assert all(f["messages"] == 0 for u in users["users"] for f in u["folders"].values())
    assert_error(*await api.call("DELETE", "/api/v1/messages"), 400, "user")
    assert_error(*await api.call("DELETE", "/api/v1/messages?user=ghost@corp.example"), 404)
    assert_error(*await api.call("DELETE", f"/api/v1/messages?user={BOB}&folder=Nope"), 404, "Nope")


# --- the long poll -------------------------------------------------------------------------------------------


async def waits_open(lab: Lab, n: int) -> None:
    """Until n long polls are inside the server. A poll with a deadline: the API offers no event for "a request
    reached its handler", and the test must know the wait began before it sends the mail that should wake it."""
    deadline = time.monotonic() + TIMEOUT
    while lab.web.streams < n:
        assert time.monotonic() < deadline, "the wait never started"
        await asyncio.sleep(0.005)


async def test_wait_returns_what_is_there_already(api: Api) -> None:
    mid = await send(api.lab, to=[BOB], subject="early bird")
    started = time.monotonic()
    status, body = await api.get(f"/api/v1/wait?user={BOB}&q=subject:early&timeout=30")
    assert status == 200 and body["message_id"] == mid
    assert time.monotonic() - started < 5


async def test_wait_wakes_when_the_message_arrives(api: Api) -> None:
    await send(api.lab, to=[BOB], subject="noise")
    timeout = 30.0
    started = time.monotonic()
    waiting = asyncio.create_task(api.get(f"/api/v1/wait?user={BOB}&q=subject:invoice&timeout={timeout:g}"))
    await waits_open(api.lab, 1)
    await send(api.lab, to=[BOB], subject="unrelated", settle=True)  # wakes it, does not match
    assert not waiting.done()
    mid = await send(api.lab, to=[BOB], subject="Invoice 42", settle=False)
    status, body = await asyncio.wait_for(waiting, TIMEOUT)
    elapsed = time.monotonic() - started
    assert status == 200, body
    assert body["message_id"] == mid and body["subject"] == "Invoice 42" and body["folder"] == "INBOX"
    assert elapsed < timeout / 3
    assert api.lab.web.streams == 0


async def test_wait_times_out_with_408(api: Api) -> None:
    started = time.monotonic()
    status, body = await api.get(f"/api/v1/wait?user={BOB}&q=nothing-like-this&timeout=0.3")
    assert_error(status, body, 408, "0.3")
    assert 0.3 <= time.monotonic() - started < 5
    assert_error(*await api.get(f"/api/v1/wait?user={BOB}&timeout=0"), 408)
    for bad in ("-1", "301", "abc", "nan", "inf"):
        assert_error(*await api.get(f"/api/v1/wait?user={BOB}&timeout={bad}"), 400, "timeout")
    assert_error(*await api.get(f"/api/v1/wait?user={BOB}&q=zz:top"), 400, "zz:")
    assert_error(*await api.get("/api/v1/wait?user=ghost@corp.example"), 404)
    assert_error(*await api.get("/api/v1/wait"), 400, "user")


async def test_wait_in_every_folder_and_for_a_flag(api: Api) -> None:
    mid = await send(api.lab, to=[BOB], subject="to be read")
    waiting = asyncio.create_task(api.get(f"/api/v1/wait?user={BOB}&q=is:seen&folder=*&timeout=30"))
    await waits_open(api.lab, 1)
    store = api.lab.store("corp.example")
    store.store_flags(BOB, "INBOX", [1], ["\\Seen"], "add")
    status, body = await asyncio.wait_for(waiting, TIMEOUT)
    assert status == 200 and body["message_id"] == mid and body["seen"] is True


async def test_a_wait_ends_promptly_when_the_lab_stops() -> None:
    async with aiohttp.ClientSession() as session:
        lab = Lab()
        await lab.start()
        try:
            url = f"{lab.web.url}/api/v1/wait?user={BOB}&timeout=120"
            headers = {"Authorization": f"Bearer {lab.web.token}"}

            async def poll() -> int:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            waiting = asyncio.create_task(poll())
            await waits_open(lab, 1)
        finally:
            started = time.monotonic()
            await lab.stop()
        try:
            status = await asyncio.wait_for(waiting, TIMEOUT)
        except aiohttp.ClientError:
            status = None  # the connection closed with the server: also an end
        assert status in (503, None)
        assert time.monotonic() - started < 5


# --- recalls and events --------------------------------------------------------------------------------------


async def test_recalls_with_their_parsed_report(api: Api) -> None:
    mid = await send(api.lab, to=[BOB], subject="Oops")
    handle = await RecallAgent(api.lab, ALICE, api.lab.password(ALICE)).recall(mid)
    await handle.report(timeout=TIMEOUT)
    await api.lab.wait_idle()
    status, body = await api.get("/api/v1/recalls")
    assert status == 200
    [rec] = body["recalls"]
    assert rec["original"] == mid and rec["mode"] == "cloud" and rec["statuses"] == {BOB: "recalled"}
    status, one = await api.get(f"/api/v1/recalls/{path_id(mid)}")
    assert status == 200, one
    assert one["original"] == mid
    [parsed] = one["parsed_reports"]
    assert parsed["kind"] == "report" and parsed["found"] is True and parsed["user"] == ALICE
    assert [(r["recipient"], r["status"]) for r in parsed["content"]["recipients"]] == [(BOB, "recalled")]
    assert parsed["content"]["original_message_id"] == mid
    status, bare = await api.get(f"/api/v1/recalls/{path_id(mid[1:-1])}")
    assert status == 200 and bare["original"] == mid
    # the report is gone from the store: the record stays, the parse says so
    await api.call("DELETE", f"/api/v1/messages?user={ALICE}")
    status, one = await api.get(f"/api/v1/recalls/{path_id(mid)}")
    assert one["parsed_reports"][0]["found"] is False and one["parsed_reports"][0]["error"]
    assert_error(*await api.get(f"/api/v1/recalls/{path_id('<never@corp.example>')}"), 404)
    assert_error(*await api.get(f"/api/v1/recalls/{path_id('a b')}"), 400)


async def test_events_since_and_limit(api: Api) -> None:
    mid = await send(api.lab, to=[BOB])
    status, body = await api.get("/api/v1/events")
    assert status == 200 and body["more"] is False
    kinds = [e["kind"] for e in body["events"]]
    assert "accepted" in kinds and "stored" in kinds
    assert body["last_seq"] == body["events"][-1]["seq"]
    assert any(e.get("message_id") == mid for e in body["events"])
    status, page = await api.get("/api/v1/events?since=0&limit=1")
    assert len(page["events"]) == 1 and page["more"] is True
    status, rest = await api.get(f"/api/v1/events?since={page['events'][0]['seq']}")
    assert [e["seq"] for e in rest["events"]] == [e["seq"] for e in body["events"][1:]]
    status, none = await api.get(f"/api/v1/events?since={body['last_seq']}")
    assert none["events"] == [] and none["more"] is False
    for bad in ("since=-1", "since=x", "limit=0", "limit=1001"):
        assert_error(*await api.get(f"/api/v1/events?{bad}"), 400, bad.partition("=")[0])
