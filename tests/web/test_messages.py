"""Reading stored messages into the API's JSON, and the search language, without a server.

The query parser and the message reader take what peers send; property tests (Hypothesis) check they never
raise anything but the parser's own QueryError, whatever the input. Searching a store is checked for order,
pages, the size cap on body search, and that it yields to the event loop while it works.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.store import MemoryStore
from recall_lab.harness.web import messages
from recall_lab.harness.web.messages import (
    Query,
    QueryError,
    first_match,
    html_to_text,
    parse_query,
    read_message,
    search,
)

BOB = "bob@corp.example"


def build(subject: str = "Budget", body: str = "the figures\n", *, html: str | None = None,
          attachment: bytes | None = None, to: str = BOB, cc: str | None = None,
          sender: str = "Alice Example <alice@corp.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = "Tue, 2 Jan 2024 09:30:00 +0100"
    msg["Message-ID"] = f"<{abs(hash((subject, body)))}@corp.example>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="data.bin")
    return msg.as_bytes()


# --- the query language ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("", Query(text="")),
    ("  Hello   World ", Query(words=("hello", "world"), text="  Hello   World ")),
    ('"Exact Phrase" x', Query(words=("exact phrase", "x"), text='"Exact Phrase" x')),
    ('from:Alice to:"Bob B" subject:Q3', Query(senders=("alice",), recipients=("bob b",), subjects=("q3",),
                                                text='from:Alice to:"Bob B" subject:Q3')),
    ("FROM:x IS:SEEN", Query(senders=("x",), seen=True, text="FROM:x IS:SEEN")),
    ("is:unread has:attachment", Query(seen=False, has_attachment=True, text="is:unread has:attachment")),
    ('"12:30" ""', Query(words=("12:30",), text='"12:30" ""')),
    ("café", Query(words=("café",), text="café")),
])
def test_parse_query(text: str, expected: Query) -> None:
    assert parse_query(text) == expected


@pytest.mark.parametrize("text,word", [
    ("colour:red", "'colour:'"), ("http://example.com", "'http:'"), ('"open phrase', "unbalanced quote"),
    ('from:"x', "unbalanced quote"), ("from:", "needs a value"), ('subject:""', "needs a value"),
    ("is:read", "is:read"), ("has:image", "has:image"), ("x" * 1001, "longer than 1000"),
])
def test_bad_queries_name_the_problem(text: str, word: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    assert word in str(caught.value)


SAMPLE = read_message(build(cc="Carol <carol@corp.example>", html="<p>hi</p>", attachment=b"xyz"))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list('ab: "\'\\\t\nfromtsubjectishasseenunreadattachment:é\x00')),
               max_size=60) | st.text(max_size=60))
def test_the_query_parser_raises_only_its_own_error(text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError:
        return
    assert isinstance(query.matches(SAMPLE, ["\\Seen"]), bool)
    assert isinstance(query.matches(SAMPLE, []), bool)


def test_matching() -> None:
    def hits(q: str, flags: tuple[str, ...] = ()) -> bool:
        return parse_query(q).matches(SAMPLE, flags)

    assert hits("budget figures") and hits("FIGURES") and hits("carol") and hits("corp.example")
    assert not hits("figures nowhere")
    assert hits('"the figures"') and not hits('"figures the"')
    assert hits("from:alice") and hits('from:"alice example"') and not hits("from:carol")
    assert hits("to:carol") and hits("to:bob") and not hits("to:alice")
    assert hits("subject:budg") and not hits("subject:figures")
    assert hits("is:unread") and not hits("is:seen") and hits("is:seen", ("\\Seen",))
    assert hits("has:attachment") and not parse_query("has:attachment").matches(read_message(build()), ())


# --- reading a message ------------------------------------------------------------------------------------


def test_read_a_plain_message() -> None:
    msg = read_message(build(subject="=?utf-8?q?Caf=C3=A9?= plans", body="Line one\nLine two\n"))
    assert msg.subject == "Café plans"
    assert msg.text == "Line one\nLine two\n" and msg.html is None and msg.attachments == []
    assert [a.as_dict() for a in msg.from_] == [{"name": "Alice Example", "address": "alice@corp.example"}]
    assert msg.date == "2024-01-02T09:30:00+01:00"
    assert ("Subject", "Café plans") in msg.headers
    assert msg.snippet() == "Line one Line two"
    long = read_message(build(body="word " * 100))
    assert len(long.snippet()) <= messages.SNIPPET_CHARS + 1 and long.snippet().endswith("…")


def test_text_from_html_when_there_is_no_plain_part() -> None:
    msg = EmailMessage()
    msg["Subject"] = "html only"
    msg.set_content("<html><head><title>T</title><style>p{}</style></head><body><p>Hello &amp; <b>welcome</b>"
                    "</p><script>alert(1)</script><div>second</div></body></html>", subtype="html")
    parsed = read_message(msg.as_bytes())
    assert parsed.text == "Hello & welcome\n\nsecond"
    assert parsed.html is not None and "<script>" in parsed.html  # as sent


def test_attachments_including_an_attached_message() -> None:
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner body")
    outer = EmailMessage()
    outer["Subject"] = "outer"
    outer.set_content("outer body")
    outer.add_attachment(b"\x00\x01\x02", maintype="application", subtype="octet-stream", filename="a.bin")
    outer.add_attachment(inner)
    outer.add_attachment("notes", subtype="plain", filename="notes.txt")
    parsed = read_message(outer.as_bytes())
    assert parsed.text == "outer body\n"
    kinds = [(a.filename, a.content_type) for a in parsed.attachments]
    assert kinds == [("a.bin", "application/octet-stream"), (None, "message/rfc822"), ("notes.txt", "text/plain")]
    assert parsed.attachments[0].size == 3 and parsed.attachments[1].size > 0


@pytest.mark.parametrize("raw", [
    b"",
    b"\xff\xfe\x00garbage",
    b"Subject: =?x-unknown?q?abc?=\r\nFrom: <<<@@>\r\nTo: ,,,@,\r\nDate: not a date\r\n"
    b"Content-Type: text/plain; charset=x-nonexistent\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not64",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nunterminated",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
    b"Content-Type: message/rfc822\r\n\r\nnot really a message",
    b"From: \"unclosed <a@b>\r\nSubject: \xe9\xe8 raw 8bit\r\n\r\nbody \xff",
])
def test_malformed_messages_do_not_raise(raw: bytes) -> None:
    parsed = read_message(raw)
    assert isinstance(parsed.text, str) and isinstance(parsed.subject, str)
    assert isinstance(parsed.snippet(), str) and isinstance(parsed.search_text(), str)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.builds(lambda a, b: build()[:a] + b + build()[a:],
                                           st.integers(0, 400), st.binary(max_size=40)))
def test_any_bytes_read_without_raising(raw: bytes) -> None:
    parsed = read_message(raw)
    assert isinstance(parsed.search_text(), str)
    assert isinstance(parse_query("from:a to:b x has:attachment").matches(parsed, ()), bool)


def test_html_to_text_falls_back_on_unparsable_markup(monkeypatch) -> None:
    assert html_to_text("<p>a</p><p>b</p>") == "a\n\nb"
    assert html_to_text("plain") == "plain"
    # how html.parser reads a CDATA section outside foreign content changed within Python 3.11's patch releases
    # (raise, or a bogus comment): either way the answer is text, never an exception
    assert isinstance(html_to_text("<![CDATA[x]]><!bogus x"), str)

    def refuse(self, data):  # noqa: ANN001, ANN202 - a parser that rejects the markup
        raise AssertionError("unparsable")

    monkeypatch.setattr(messages._TextOf, "feed", refuse)
    assert html_to_text("<b>kept</b> text<br>") == "kept text"


# --- searching a store ------------------------------------------------------------------------------------


def filled_store(n: int, body: str = "filler\n") -> MemoryStore:
    store = MemoryStore()
    store.ensure_user(BOB)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(n):
        store.append(BOB, "INBOX", build(subject=f"m{i}", body=body + ("needle\n" if i % 10 == 0 else "")),
                     internaldate=start + timedelta(minutes=i))
    return store


async def test_search_newest_first_with_pages() -> None:
    store = filled_store(25)
    everything = await search(store, BOB, ["INBOX"], parse_query(""), limit=1000)
    assert [m["subject"] for m in everything.messages] == [f"m{i}" for i in reversed(range(25))]
    page = await search(store, BOB, ["INBOX"], parse_query("needle"), offset=1, limit=1)
    assert [m["subject"] for m in page.messages] == ["m10"] and page.more is True
    last = await search(store, BOB, ["INBOX"], parse_query("needle"), offset=2, limit=5)
    assert [m["subject"] for m in last.messages] == ["m0"] and last.more is False
    assert (await search(store, BOB, ["INBOX", "Gone"], parse_query("m3"))).messages[0]["subject"] == "m3"


async def test_bodies_over_the_cap_are_not_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    store = filled_store(3, body="x" * 2000)
    monkeypatch.setattr(messages, "MAX_TEXT_BYTES", 1000)
    found = await search(store, BOB, ["INBOX"], parse_query("needle"))
    assert found.messages == []
    by_subject = await search(store, BOB, ["INBOX"], parse_query("subject:m0"))
    assert [m["subject"] for m in by_subject.messages] == ["m0"] and by_subject.messages[0]["snippet"] == ""


async def test_search_yields_to_the_loop_between_batches() -> None:
    store = filled_store(200, body="lorem ipsum " * 2000)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    result = await search(store, BOB, ["INBOX"], parse_query("nothing-matches-this"))
    stop.set()
    await task
    assert result.messages == []
    assert ticks >= 200 // messages.BATCH_MESSAGES


async def test_first_match_remembers_what_did_not_match() -> None:
    store = filled_store(3)
    known: dict[tuple[str, int, int], bool] = {}
    assert await first_match(store, BOB, ["INBOX"], parse_query("subject:m9"), known) is None
    assert sorted(k[2] for k in known) == [1, 2, 3] and not any(known.values())
    store.append(BOB, "INBOX", build(subject="m9"))
    found = await first_match(store, BOB, ["INBOX"], parse_query("subject:m9"), known)
    assert found is not None and found["subject"] == "m9" and found["uid"] == 4
    # a flag criterion is checked afresh each time
    assert await first_match(store, BOB, ["INBOX"], parse_query("is:seen"), {}) is None
    store.store_flags(BOB, "INBOX", [2], ["\\Seen"], "add")
    seen = await first_match(store, BOB, ["INBOX"], parse_query("is:seen"), {})
    assert seen is not None and seen["uid"] == 2
