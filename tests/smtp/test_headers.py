"""Sans-I/O parts of the SMTP side, with hypothesis: header-block edits, reply codes, address checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.smtp.handlers import normalise_address
from recall_lab.fake_servers.smtp.protocol import with_enhanced_code

names = st.sampled_from(["Subject", "To", "Cc", "Bcc", "X-Test", "Received", "Message-ID"])
values = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)
fields = st.lists(st.tuples(names, values, st.booleans()), max_size=8)
bodies = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n"))


def build(fs, body: bytes) -> bytes:
    out = b""
    for name, value, folded in fs:
        out += f"{name}: {value}".encode() + (b"\r\n\t more" if folded else b"") + b"\r\n"
    return out + b"\r\n" + body


@given(fields, bodies)
def test_split_keeps_every_octet(fs, body):
    raw = build(fs, body)
    head, rest = headers.split_message(raw)
    assert head + rest == raw
    assert rest.startswith(b"\r\n")


@given(fields, bodies, names)
def test_remove_drops_exactly_that_field_and_keeps_the_body(fs, body, name):
    raw = build(fs, body)
    out = headers.remove_headers(raw, [name])
    assert headers.header_values(out, name) == []
    assert out.endswith(b"\r\n" + body)
    kept = [f for f in fs if f[0].lower() != name.lower()]
    assert out == build(kept, body)


@given(fields, bodies, values)
def test_prepend_and_append_are_found_again(fs, body, value):
    raw = build(fs, body)
    top = headers.prepend_headers(raw, [("Received", value)])
    assert top.endswith(raw) and headers.header_values(top, "Received")[0] == value
    end = headers.append_headers(raw, [("X-Added", value)])
    assert headers.header_values(end, "X-Added") == [value]
    assert end.endswith(b"\r\n" + body)


def test_folded_values_are_unfolded():
    raw = b"Subject: a\r\n  long one\r\nTo: x@y.example,\r\n\tz@y.example\r\n\r\nbody"
    assert headers.header_values(raw, "subject") == ["a  long one"]
    assert headers.addresses(raw, "To") == ["x@y.example", "z@y.example"]


@given(st.integers(400, 599), st.text(max_size=40))
def test_every_error_reply_gets_an_enhanced_code_once(code, text):
    reply = f"{code} {text}".rstrip()
    out = with_enhanced_code(reply)
    assert out.startswith(f"{code} {str(code)[0]}.")
    assert with_enhanced_code(out) == out


@given(st.integers(200, 399), st.text(max_size=40))
def test_success_replies_are_left_alone(code, text):
    assert with_enhanced_code(f"{code} {text}") == f"{code} {text}"


@given(st.text(max_size=80))
def test_normalise_address_never_raises(text):
    out = normalise_address(text)
    assert out is None or out == "" or "@" in out


local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=10)
domain = st.sampled_from(["corp.example", "mail.example", "x.y.example"])
display = st.one_of(st.none(), st.text(alphabet="abcdefg hijk", min_size=1, max_size=10))


@given(st.lists(st.tuples(display, local, domain), min_size=1, max_size=4))
def test_fast_address_list_agrees_with_email_utils(entries):
    from email.utils import getaddresses

    parts = [f"{name.strip()} <{lp}@{d}>" if name and name.strip() else f"{lp}@{d}" for name, lp, d in entries]
    value = ", ".join(parts)
    expected = [a.lower() for _, a in getaddresses([value]) if a]
    assert headers.addresses(f"To: {value}\r\n\r\n".encode(), "To") == expected
