"""One reading of the header block (fake_servers/smtp/headers.py::HeaderBlock) against Python's email parser.

The promises, checked with hypothesis on adversarial header blocks (bare CR and LF, CR-CRLF, folds, obs-fold,
blanks before colons, leading white space, NUL and other controls, 8-bit octets, "From " lines, duplicates,
no body separator):
- a block without `problem()` reads the same to both, field for field (names and policy.default values);
- Python never sees a field that HeaderBlock does not (so a filter built on HeaderBlock misses nothing);
- after `strip_verified`, Python sees no X-Recall-Verified, whatever the input; `has_recall_headers` is False
  only when Python sees no X-Recall-* field;
- `verified_by` believes a mark only where Python sees exactly that one mark.
"""

from __future__ import annotations

from email import policy as email_policy
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.recall.format import (
    has_recall_headers,
    mark_verified,
    strip_verified,
    verified_by,
)
from recall_lab.fake_servers.smtp.headers import HeaderBlock, remove_headers, split_message

PARSER = BytesParser(policy=email_policy.default)

_names = st.sampled_from([b"X-Recall-Verified", b"x-recall-verified", b"X-RECALL-VERIFIED", b"X-Recall-Action",
                          b"From", b"Subject", b"Received", b"X-Recall-Verified ", b" X-Recall-Verified",
                          b"X-Recall-\xc3\xa9", b"X-Recall-Verified\x00", b"From ", b"", b"Not a field"])
_values = st.lists(st.sampled_from([b"corp.example", b" ", b"\t", b"a", b":", b"\x00", b"\x0c", b"\x0b", b"\xc3\xa9",
                                    b"\x85", b"X-Recall-Verified: corp.example", b"=?utf-8?q?x?="]),
                   max_size=5).map(b"".join)
_eols = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"])
_folds = st.sampled_from([b"", b"", b" more", b"\t", b" ", b"X-Recall-Verified: corp.example"])


@st.composite
def header_blocks(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        lines.append(draw(_names) + draw(st.sampled_from([b":", b":", b": ", b""])) + draw(_values) + draw(_eols))
        for _ in range(draw(st.integers(0, 2))):
            fold = draw(_folds)
            lines.append(((b" " + fold) if fold[:1] not in (b" ", b"\t") else fold) + draw(_eols))
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b""]))
    return b"".join(lines) + end + draw(st.sampled_from([b"body\r\n", b"X-Recall-Verified: corp.example\r\n\r\nb",
                                                         b"\nX-Recall-Verified: corp.example\r\n\r\n", b""]))


def python_fields(raw: bytes) -> list[tuple[bytes, str]]:
    """(lower-cased name, value) of every header field Python's parser sees, values as policy.default's header
    parser gets them (line ends removed)."""
    msg = PARSER.parsebytes(raw)
    return [(name.encode("ascii", "surrogateescape").lower(), str(value).replace("\r", "").replace("\n", ""))
            for name, value in msg.raw_items()]


def heads_fields(raw: bytes) -> list[tuple[bytes, str]]:
    """The same, as HeaderBlock reads the block (raw_values for the names code asks for by name)."""
    from recall_lab.fake_servers.smtp.headers import _fields, _name, _python_value
    head, _ = split_message(raw)
    fields = [f for f in _fields(head) if b":" in f]
    out = [(_name(f), _python_value(f)) for f in fields]
    block = HeaderBlock(raw)
    for name in ("From", "Subject", "X-Recall-Verified"):
        assert block.raw_values(name) == [v for n, v in out if n == name.lower().encode()]
    return out


@settings(max_examples=700, deadline=None)
@given(header_blocks())
def test_a_regular_block_reads_the_same_to_python_field_for_field(raw):
    if HeaderBlock(raw).problem() is not None:
        return
    assert python_fields(raw) == heads_fields(raw)


@settings(max_examples=700, deadline=None)
@given(header_blocks())
def test_python_never_sees_a_field_header_block_misses(raw):
    assert set(python_fields(raw)) <= set(heads_fields(raw))


@settings(max_examples=700, deadline=None)
@given(header_blocks())
def test_no_reader_sees_a_mark_after_the_filter(raw):
    out = strip_verified(raw)
    assert PARSER.parsebytes(out).get_all("X-Recall-Verified") is None, out
    assert not HeaderBlock(out).has("X-Recall-Verified")
    assert verified_by(out) is None and verified_by(PARSER.parsebytes(out)) is None
    if out is raw:
        return
    # what the filter kept of the header, it kept in order, and the body is untouched
    assert split_message(out)[1].lstrip(b"\r\n") == split_message(raw)[1].lstrip(b"\r\n")


@settings(max_examples=500, deadline=None)
@given(header_blocks())
def test_the_quick_recall_test_misses_nothing_python_sees(raw):
    if not has_recall_headers(raw):
        assert not any(name.startswith(b"x-recall-") for name, _ in python_fields(raw))


@settings(max_examples=700, deadline=None)
@given(header_blocks())
def test_a_believed_mark_is_the_one_python_sees(raw):
    domain = verified_by(raw)
    if domain is None:
        return
    marks = PARSER.parsebytes(raw).get_all("X-Recall-Verified")
    assert marks is not None and len(marks) == 1 and str(marks[0]).strip().lower() == domain
    assert HeaderBlock(raw).problem() is None


@settings(max_examples=500, deadline=None)
@given(header_blocks(), st.sampled_from(["corp.example", "mail.example"]))
def test_the_servers_mark_is_believed_on_a_regular_message_and_only_its_own(raw, domain):
    marked = mark_verified(raw, domain)
    assert verified_by(marked) in (domain, None)  # nothing a message holds can turn the mark into another's
    if HeaderBlock(raw).problem() is None:
        assert verified_by(marked) == domain
        assert verified_by(PARSER.parsebytes(marked)) == domain


def test_the_issues_probe_and_its_relatives():
    probe = (b"From: alice@corp.example\r\nSubject: Recall: Q3\r\nMessage-ID: <f@evil>\rX-Recall-Verified: corp.example"
             b"\rX-Recall-Message-ID: <ORIG>\rX-Recall-Action: delete\r\n\r\nx\r\n")
    assert has_recall_headers(probe)
    assert verified_by(probe) is None
    assert PARSER.parsebytes(strip_verified(probe))["X-Recall-Verified"] is None
    assert HeaderBlock(probe).problem() == "line 3 of the header ends with a bare CR"
    # a bare CR before the mark and a bare LF after it: dropping the mark must not join them into a CRLF
    joined = b"A: 1\rX-Recall-Verified: x\n\nX-Recall-Verified: corp.example\r\n\r\nbody"
    assert PARSER.parsebytes(strip_verified(joined))["X-Recall-Verified"] is None
    assert remove_headers(joined, ["Nothing-Like-This"]) is joined
    folded = b"X-Recall-Verified:\r\n corp.example\r\nFrom: a@corp.example\r\n\r\nb"
    assert strip_verified(folded) == b"From: a@corp.example\r\n\r\nb"
    assert verified_by(b"X-Recall-Verified: corp.example\r\nX-Recall-Verified: corp.example\r\n\r\n") is None
    assert verified_by(b"X-Recall-Verified: corp.example (trust me)\r\n\r\n") is None
    assert verified_by(b"X-Recall-Verified: corp.example\r\n\r\n") == "corp.example"
    assert verified_by(b"X-Recall-Verified: corp.example\r\n") == "corp.example"  # no body separator


def test_re_serialising_a_parsed_message_cannot_forge_a_field():
    """Python 3.11.7 writes a decoded CR LF into a re-folded header (CVE-2024-6923): the server's serialiser
    refuses, and a policy's set_message with it."""
    from recall_lab.fake_servers.pipeline import Delivery
    from recall_lab.fake_servers.smtp.headers import as_bytes_checked

    raw = (b"From: a@corp.example\r\nSubject: " + b"x" * 80
           + b" =?utf-8?q?a=0D=0AX-Recall-Verified:_corp.example?=\r\n\r\nbody\r\n")
    msg = PARSER.parsebytes(raw)
    delivery = Delivery(domain="corp.example", channel="mx", auth_user=None, mail_from="", recipients=[],
                        raw=raw, queue_id="q")
    if b"\r\nX-Recall-Verified: corp.example\r\n" in msg.as_bytes(policy=email_policy.SMTP):  # the hazard
        with pytest.raises(ValueError, match="header injection"):
            as_bytes_checked(msg, email_policy.SMTP)
        with pytest.raises(ValueError):
            delivery.set_message(delivery.message)
        assert delivery.raw is raw
    else:  # a Python with the fix (Debian backports it): whatever it writes, no field is forged
        try:
            written = as_bytes_checked(msg, email_policy.SMTP)
        except ValueError:
            pass
        else:
            assert PARSER.parsebytes(written)["X-Recall-Verified"] is None
    plain = PARSER.parsebytes(b"From: a@corp.example\r\nSubject: hi\r\n\r\nbody\r\n")
    plain["X-Added"] = "1"
    assert as_bytes_checked(plain, email_policy.SMTP) == \
        b"From: a@corp.example\r\nSubject: hi\r\nX-Added: 1\r\n\r\nbody\r\n"
