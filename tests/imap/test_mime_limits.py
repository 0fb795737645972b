"""Bounded MIME parsing: one message must not stall the server or eat its memory.

- The fast scanner agrees with the reference scanner (tests/imap/mime_oracle.py) on every generated message
  within the limits, and keeps within small limits on every message (hypothesis).
- Past the limits it behaves as Dovecot does (part count, depth, truncated parts as application/octet-stream,
  80-byte boundaries, boundary matching, the [CR]LF of a cut header): compared with a real Dovecot.
- The hostile messages of the issue (scaled down here; scripts/bench_mime.py runs them full size against a
  server process) build bounded trees, in steps, with bounded memory.
- The delivery check (fake_servers/mime_limits.py) refuses them with a reason and passes ordinary mail.
"""

from __future__ import annotations

import random
import re
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.imap.errors import ParseError
from recall_lab.fake_servers.imap.fetch_items import parse_item
from recall_lab.fake_servers.imap.mime import tree as mime_tree
from recall_lab.fake_servers.imap.mime.cache import ViewCache
from recall_lab.fake_servers.imap.mime.rfc822 import _parse_content_type, parse_content_type
from recall_lab.fake_servers.imap.mime.tree import MimeLimits, Part, parse_message, parse_steps
from recall_lab.fake_servers.imap.mime.view import MessageView
from recall_lab.fake_servers.imap.serialise import serialise
from recall_lab.fake_servers.mime_limits import check_message, check_steps
from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable
from tests.imap import hostile_mime, mime_oracle
from tests.imap.mime_samples import SAMPLES
from tests.imap.test_message_view_dovecot import ImapClient, norm, parse_fetch
from tests.loop_lag import quiet_heap  # noqa: F401 - a fixture

# --- generated messages ---------------------------------------------------------------------------------

_LINES = [line for raw in SAMPLES.values() for line in re.split(rb"(?<=\n)", raw) if line]
_EXTRA = [
    b"--a\r\n", b"--a--\r\n", b"--a\n", b"--a", b"--b\r\n", b"--b--\r\n", b"--ab\r\n", b"--a-\r\n", b"--a----\r\n",
    b"--ab--\r\n", b"--\r\n", b"--", b"-", b"\r", b"\r\n", b"\n", b"\n\n", b"text\r\n", b" folded\r\n",
    b"Content-Type: multipart/mixed; boundary=a\r\n", b"Content-Type: multipart/alternative; boundary=b\r\n",
    b"Content-Type: multipart/mixed; boundary=\"a-\"\r\n", b"Content-Type: multipart/mixed; boundary=ab\r\n",
    b"Content-Type: multipart/digest; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/mixed; boundary=\"" + b"L" * 90 + b"\"\r\n", b"--" + b"L" * 80 + b"\r\n",
    b"MIME-Version: 1.0\r\n", b"Subject: s\r\n", b"Content-Type: text/plain\n", b"noeol",
]
lines_message = st.lists(st.sampled_from(_LINES + _EXTRA * 4), min_size=1, max_size=50).map(b"".join)


def _shape(p: Part) -> tuple:
    """Everything the scanner decides about a part (and its header fields), recursively."""
    return (p.start, p.header_end, p.body_start, p.end, p.kind, p.mime, p.content_type, p.boundary, p.cut_short,
            [(f.name, f.start, f.end, f.value_start) for f in (p.fields or [])],
            [_shape(c) for c in p.children])


def _count(p: Part) -> int:
    return 1 + sum(_count(c) for c in p.children)


def _depth(p: Part) -> int:
    return max((1 + _depth(c) for c in p.children), default=0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_message)
def test_scanner_agrees_with_the_reference_within_the_limits(raw: bytes) -> None:
    ours = parse_message(raw)
    assert ours.exceeded is None
    assert _shape(ours) == _shape(mime_oracle.parse_message(raw))


def test_scanner_agrees_with_the_reference_on_spliced_messages() -> None:
    """Many more cases than hypothesis runs, cheaply: random splices of the corpus lines (fixed seed)."""
    rng = random.Random(8)
    pool = _LINES + _EXTRA * 4
    for _ in range(3000):
        raw = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 60)))
        assert _shape(parse_message(raw)) == _shape(mime_oracle.parse_message(raw)), raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines_message, st.integers(2, 6), st.integers(2, 5), st.integers(1, 12))
def test_small_limits_bound_every_message(raw: bytes, parts: int, depth: int, fields: int) -> None:
    limits = MimeLimits(max_parts=parts, max_depth=depth, max_header_fields=fields)
    ours = parse_message(raw, limits)
    assert _count(ours) <= parts
    assert _depth(ours) <= depth - 1
    assert sum(len(p.fields or ()) for p in _walk(ours)) <= fields
    full = parse_message(raw)
    inside = (_count(full) < parts and _depth(full) <= depth - 2
              and sum(len(p.fields or ()) for p in _walk(full)) <= fields)
    if inside:
        assert ours.exceeded is None
    if ours.exceeded is None:  # nothing was cut: the same tree as without limits
        assert _shape(ours) == _shape(full)
    # what it renders is a valid, bounded structure, the same in one go and in steps
    view = MessageView(raw, limits)
    for extended in (True, False):
        assert serialise(view.bodystructure(extended)) == view.bodystructure_bytes(extended)
    stepped = MessageView(raw, limits)
    list(stepped.prepare(["BODYSTRUCTURE", "BODY", "ENVELOPE", "TEXT"]))
    assert stepped.bodystructure_bytes() == view.bodystructure_bytes()
    assert stepped.bodystructure_bytes(False) == view.bodystructure_bytes(False)
    assert stepped.body_text() == view.body_text()


def _walk(p: Part):  # noqa: ANN202 - a generator of parts
    yield p
    for c in p.children:
        yield from _walk(c)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_samples_render_the_same_in_one_go_and_in_steps(name: str) -> None:
    raw = SAMPLES[name]
    view = MessageView(raw)
    assert view.exceeded is None
    stepped = MessageView(raw)
    list(stepped.prepare(["BODYSTRUCTURE", "BODY", "ENVELOPE"]))
    for extended in (True, False):
        assert stepped.bodystructure_bytes(extended) == serialise(view.bodystructure(extended))
    assert stepped.envelope_bytes() == serialise(view.envelope())
    assert check_message(raw) is None


# --- the Content-Type fast path ---------------------------------------------------------------------------

_CT_PIECES = st.sampled_from(["text", "/", "plain", "multipart", "mixed", ";", " ", "\t", "\r\n ", "=", "charset",
                              "utf-8", '"', '"a b"', "boundary", "b*", "*0", "(", ")", "\\", "é", "x", "",
                              "name", '"q\\"x"', ",", "[", "?"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_CT_PIECES, max_size=14).map("".join))
def test_content_type_fast_path_answers_as_the_lexer(value: str) -> None:
    assert parse_content_type(value) == _parse_content_type(value)


# --- past the limits: as Dovecot does ----------------------------------------------------------------------


def _nest_multipart(depth: int, inner: bytes = b"x\r\n") -> bytes:
    m = inner
    for i in range(depth, 0, -1):
        m = b"Content-Type: multipart/mixed; boundary=q%d\r\n\r\n--q%d\r\n" % (i, i) + m + b"\r\n--q%d--\r\n" % i
    return m


def _dovecot_cases() -> dict[str, bytes]:
    long_b = b"B" * 100
    out = {
        "parts_over_limit": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
            b"--b\r\nContent-Type: text/plain\r\n\r\np%d\r\n" % i for i in range(10005)) + b"--b--\r\nepi\r\n",
        "parts_at_limit": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(
            b"--b\r\n\r\np%d\r\n" % i for i in range(9999)) + b"--b--\r\n",
        "rfc822_after_part_limit": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 9998
        + b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: late\r\n\r\nlate body\r\n--b--\r\n",
        "multipart_too_deep": _nest_multipart(105),
        "rfc822_too_deep": b"".join(b"Content-Type: message/rfc822\r\nSubject: s%d\r\n\r\n" % i for i in range(105))
        + b"Subject: leaf\r\n\r\nx\r\n",
        "digest_entry_too_deep": _nest_multipart(98, b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
                                                     b"Subject: in digest\r\n\r\nbody\r\n--d--\r\n"),
        "boundary_over_80_bytes": b"Content-Type: multipart/mixed; boundary=\"" + long_b + b"\"\r\n\r\n--" + long_b[:80]
        + b"xyz\r\n\r\none\r\n--" + long_b + b"\r\n\r\ntwo\r\n--" + long_b[:80] + b"--\r\n",
        "boundary_ending_in_dashes": b"Content-Type: multipart/mixed; boundary=\"foo--\"\r\n\r\n--foo--\r\n"
        b"Content-Type: multipart/mixed; boundary=foo\r\n\r\n--foo\r\n\r\ninner\r\n--foo--\r\n\r\nafter\r\n--foo----\r\n",
        "inner_boundary_with_dashes": b"Content-Type: multipart/mixed; boundary=foo\r\n\r\n--foo\r\n"
        b"Content-Type: multipart/mixed; boundary=\"foo--\"\r\n\r\n--foo--\r\n\r\ninner\r\n--foo----\r\n\r\nafter\r\n--foo--\r\n",
        "multipart_without_subtype": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart"
        b"\r\n\r\nx\r\n--b\r\nContent-Type: message\r\n\r\ny\r\n--b--\r\n",
        "header_cut_by_grandparent": b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\nSubject: x\r\n--outer\r\n\r\ntwo\r\n--outer--\r\n",
        "empty_line_taken_by_grandparent": b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\nSubject: x\r\n\r\n--outer\r\n\r\ntwo\r\n"
        b"--outer--\r\n",
        "attached_header_cut": b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n--outer\r\n\r\ntwo\r\n--outer--\r\n",
        "attached_in_inner_cut": b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n"
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: deep\r\n--outer\r\n\r\ntwo\r\n--outer--\r\n",
    }
    return out


DOVECOT_CASES = _dovecot_cases()
_SECTIONS = [b"1", b"2", b"1.1", b"1.1.1", b"1.MIME", b"2.MIME", b"1.HEADER", b"1.TEXT", b"9999", b"10000",
             b"10001", b"9999.HEADER"]


@pytest.fixture(scope="module")
def dovecot_limits(tmp_path_factory):
    dovecot = DovecotServer(tmp_path_factory.mktemp("dovecot-limits"), {"ml": "mlpw"})
    try:
        dovecot.start()
    except DovecotUnavailable:
        pytest.skip("dovecot not installed")
    answers: dict[str, dict[bytes, object]] = {}
    try:
        c = ImapClient(dovecot.port)
        status, _ = c.command(b"LOGIN ml mlpw")
        assert b"OK" in status, status
        names = list(DOVECOT_CASES)
        for name in names:
            status, _ = c.command(b"APPEND INBOX", DOVECOT_CASES[name])
            assert b" OK" in status, (name, status)
        c.command(b"SELECT INBOX")
        for seq, name in enumerate(names, 1):
            _, untagged = c.command(b"FETCH %d (BODYSTRUCTURE BODY)" % seq)
            got = parse_fetch(untagged[0])
            for section in _SECTIONS:
                _, untagged = c.command(b"FETCH %d (BODY.PEEK[%s])" % (seq, section))
                fetched = [u for u in untagged if b" FETCH " in u]
                if fetched:
                    (value,) = parse_fetch(fetched[0]).values()
                    got[b"BODY[" + section + b"]"] = value or b""
            answers[name] = got
        c.close()
    finally:
        dovecot.stop()
    return answers


@pytest.mark.peer("dovecot")
@pytest.mark.parametrize("name", list(DOVECOT_CASES))
def test_limits_and_boundaries_as_dovecot(dovecot_limits, name: str) -> None:
    raw = DOVECOT_CASES[name]
    ref = dovecot_limits[name]
    view = MessageView(raw)
    assert norm(view.bodystructure()) == ref[b"BODYSTRUCTURE"]
    assert norm(view.bodystructure(False)) == ref[b"BODY"]
    assert serialise(view.bodystructure()) == view.bodystructure_bytes()
    for section in _SECTIONS:
        key = b"BODY[" + section + b"]"
        if key not in ref:
            continue
        pieces = section.split(b".")
        path = tuple(int(p) for p in pieces if p.isdigit())
        kind = next((p.decode() for p in pieces if not p.isdigit()), None)
        assert view.section(path, kind) == ref[key], section


def test_limits_are_reported() -> None:
    assert parse_message(DOVECOT_CASES["parts_over_limit"]).exceeded == "max_parts"
    assert parse_message(DOVECOT_CASES["parts_at_limit"]).exceeded == "max_parts"  # its closing line is ignored
    assert parse_message(DOVECOT_CASES["multipart_too_deep"]).exceeded == "max_depth"
    assert parse_message(DOVECOT_CASES["rfc822_too_deep"]).exceeded == "max_depth"
    assert parse_message(_nest_multipart(90)).exceeded is None
    assert parse_message(DOVECOT_CASES["boundary_over_80_bytes"]).exceeded is None


# --- hostile messages: bounded trees, bounded time, bounded memory, in steps --------------------------------

# (builder, scale for this test, the limit it must hit)
SCALED = {
    "empty_parts": (hostile_mime.empty_parts, 200_000, "max_parts"),
    "typed_parts": (hostile_mime.typed_parts, 20_000, "max_parts"),
    "nested_rfc822": (hostile_mime.nested_rfc822, 20_000, "max_depth"),
    "nested_multipart": (hostile_mime.nested_multipart, 20_000, "max_depth"),
    "huge_header": (hostile_mime.huge_header, 200_000, "max_header_fields"),
    "long_boundary_lines": (hostile_mime.long_boundary_lines, 20, None),
    "deep_body": (hostile_mime.deep_body, 3_000_000, "max_scan_passes"),
}


@pytest.mark.parametrize("name", list(SCALED))
def test_hostile_message_builds_a_bounded_tree_in_steps(name: str) -> None:
    build, scale, limit = SCALED[name]
    raw = build(scale)
    limits = MimeLimits()
    started = time.process_time()
    view = MessageView(raw, limits)
    steps = 0
    for _ in view.prepare(["BODYSTRUCTURE", "BODY", "ENVELOPE", "TEXT"]):
        steps += 1
    spent = time.process_time() - started
    tree = view.tree
    assert tree.exceeded == limit
    assert _count(tree) <= limits.max_parts
    assert _depth(tree) <= limits.max_depth - 1
    assert sum(len(p.fields or ()) for p in _walk(tree)) <= limits.max_header_fields
    # a few hundred ms of CPU at most here (the unbounded parser took seconds to minutes); generous for CI
    assert spent < 5.0, spent
    if _count(tree) > 1000:
        assert steps > 10  # the work came in pieces a server can interleave with other clients
    # the answers are ready: no more parsing
    before = time.process_time()
    view.bodystructure_bytes()
    view.envelope_bytes()
    view.section((1, 2, 3), None)
    assert time.process_time() - before < 0.05


@pytest.mark.usefixtures("quiet_heap")
def test_a_step_is_a_bounded_amount_of_work() -> None:
    """Each step of the worst message for Python (10,000 parts with their own Content-Type) is small: a
    server gives other clients a turn every few milliseconds. Measured as the longest step in CPU time (a busy
    machine delays the clock, not the work), generously."""
    raw = hostile_mime.typed_parts(20_000)
    view = MessageView(raw)
    longest = 0.0
    last = time.process_time()
    for _ in view.prepare(["BODYSTRUCTURE"]):
        now = time.process_time()
        longest = max(longest, now - last)
        last = now
    assert longest < 0.25, longest  # typically 3-6 ms; the whole message takes 0.3 s


def test_hostile_message_memory_is_a_few_times_its_size() -> None:
    raw = hostile_mime.empty_parts(200_000)  # 1.4 MB: 200,001 parts unbounded
    tracemalloc.start()
    try:
        view = MessageView(raw)
        view.bodystructure_bytes()
        view.envelope_bytes()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * len(raw) + (16 << 20), peak
    assert view.weight < 4 * len(raw) + (16 << 20)


def test_scan_is_linear_in_the_message_size() -> None:
    """Headers and bodies are searched once: ten times the data (message/rfc822 parts cut to a header each,
    a boundary that never comes) costs about ten times the time, not a hundred."""
    def cost(n: int) -> float:
        raw = (b"Content-Type: multipart/mixed; boundary=never\r\n\r\n--never\r\n"
               + b"Content-Type: text/plain\r\n\r\n" + b"line without the boundary\n" * n)
        best = 1e9
        for _ in range(3):
            started = time.process_time()
            parse_message(raw)
            best = min(best, time.process_time() - started)
        return best
    small, big = cost(100_000), cost(1_000_000)
    assert big < 30 * max(small, 1e-4), (small, big)


# --- delivery check ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(hostile_mime.HOSTILE))
def test_delivery_check_refuses_hostile_messages(name: str) -> None:
    build, _limit = hostile_mime.HOSTILE[name]
    _builder, scale, limit = SCALED[name]
    raw = build(scale)
    violation = check_message(raw)
    assert violation is not None
    expected = limit or "max_line_length"
    assert violation.limit == expected
    assert violation.smtp_reply.startswith(("554 5.6.0 ", "552 5.3.4 "))
    assert violation.imap_reply.startswith("NO [LIMIT] ")
    assert str(getattr(MimeLimits(), expected)) in violation.reason


def test_delivery_check_passes_ordinary_mail() -> None:
    for name, raw in SAMPLES.items():
        assert check_message(raw) is None, name
    assert check_message(hostile_mime.empty_parts(5000)) is None
    assert check_message(_nest_multipart(90)) is None


def test_delivery_check_line_length() -> None:
    head = b"From: a@b.example\r\nSubject: lines\r\n\r\n"
    limits = MimeLimits()
    assert check_message(head + b"x" * 998 + b"\r\n") is None
    assert check_message(head + b"x" * 998) is None
    assert check_message(head + b"x" * 998 + b"\n" + b"y" * 998 + b"\n") is None
    assert check_message(head + (b"x" * 997 + b"\r\n") * 3000) is None  # lines over window borders
    for bad in (head + b"x" * 999 + b"\r\n", head + b"x" * 999, head + b"x" * 998 + b"\rz\r\n",
                b"S" * 999 + b"\r\n\r\nbody", head + (b"x" * 500 + b"\r\n") * 5000 + b"y" * 2000):
        violation = check_message(bad)
        assert violation is not None and violation.limit == "max_line_length"
    assert check_message(head + b"x" * 50 + b"\r\n", MimeLimits(max_line_length=40)) is not None
    assert limits.max_line_length == 998


def test_delivery_check_works_in_steps() -> None:
    raw = hostile_mime.typed_parts(20_000)
    steps = check_steps(raw)
    count = 0
    try:
        while True:
            next(steps)
            count += 1
    except StopIteration as done:
        violation = done.value
    assert violation is not None and violation.limit == "max_parts"
    assert count > 10


def test_delivery_check_stops_at_the_first_limit() -> None:
    raw = hostile_mime.nested_multipart(20_000)
    started = time.process_time()
    assert check_message(raw).limit == "max_depth"  # type: ignore[union-attr]
    assert time.process_time() - started < 1.0  # it does not read the rest (rendering would)
    root = mime_tree.run_steps(parse_steps(raw, stop_at_limit=True))
    assert root.exceeded == "max_depth" and not root.children


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        MimeLimits(max_parts=0)
    with pytest.raises(ValueError):
        MimeLimits(max_depth=True)


# --- FETCH numbers, the view cache -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["BODY[1." + "9" * 5000 + "]", "BODY[]<" + "9" * 5000 + ".1>",
                                  "BODY[]<0." + "9" * 30 + ">", "BODY[4294967296]", "BODY[1.²]"])
def test_fetch_section_numbers_are_32_bit(text: str) -> None:
    with pytest.raises(ParseError):
        parse_item(text)
    assert parse_item("BODY[4294967295]").section.part == (4294967295,)  # type: ignore[union-attr]


def test_view_cache_is_bounded_by_weight_and_passes_its_limits() -> None:
    limits = MimeLimits(max_parts=50)
    cache = ViewCache(size=1000, limits=limits, max_bytes=2 << 20)
    raw = hostile_mime.empty_parts(100_000)  # 700 KB
    first = cache.get(("u", "INBOX", 1, 1), lambda: raw)
    assert first.limits is limits
    light = first.weight
    first.bodystructure_bytes()  # grows after the cache handed it out: the cache hears of it
    assert first.weight > light
    assert cache.total_weight == first.weight
    for uid in range(2, 6):
        cache.get(("u", "INBOX", 1, uid), lambda: raw).bodystructure_bytes()
        assert cache.total_weight <= 2 << 20
    assert len(cache._views) == 2  # noqa: SLF001 - the eviction is what is tested
    assert ("u", "INBOX", 1, 1) not in cache._views  # noqa: SLF001 - the least recently used went first
    assert ("u", "INBOX", 1, 5) in cache._views  # noqa: SLF001
    big = cache.get(("u", "INBOX", 1, 6), lambda: raw * 4)  # heavier than the budget alone: kept while in use
    assert list(cache._views) == [("u", "INBOX", 1, 6)]  # noqa: SLF001
    assert big.weight > 2 << 20
