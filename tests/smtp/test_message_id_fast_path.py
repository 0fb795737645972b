"""The store's fast Message-ID extraction (fake_servers/store/_core.py::_message_id, added for delivery speed)
must give exactly what the general extract_message_id gives, for any header block."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.store._core import _message_id
from recall_lab.fake_servers.store._msgid import extract_message_id

_names = st.sampled_from([b"Message-ID", b"message-id", b"MESSAGE-ID", b"Message-Id ", b"X-Message-ID",
                          b"Subject", b"From", b"Resent-Message-ID", b"Message-IDx"])
_values = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_eols = st.sampled_from([b"\r\n", b"\n", b"\r\n ", b"\r\n\t", b"\n "])


@st.composite
def messages(draw) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        parts.append(draw(_names) + b":" + draw(st.sampled_from([b"", b" ", b"\t", b"  "])) + draw(_values)
                     + draw(_eols))
    return b"".join(parts) + draw(st.sampled_from([b"\r\n", b"\n", b"", b"\r\n\r\n"])) + draw(_values)


@settings(max_examples=600, deadline=None)
@given(messages())
def test_fast_path_agrees_with_the_general_extraction(raw):
    assert _message_id(raw) == extract_message_id(raw)


def test_fast_path_on_the_usual_messages():
    raw = b"Received: x\r\nFrom: a@b.example\r\nMessage-ID:  <id-1@b.example> \r\nSubject: s\r\n\r\nbody\r\n"
    assert _message_id(raw) == "<id-1@b.example>"
    assert _message_id(b"Message-Id: <a@b>\r\n\r\n") == "<a@b>"
    assert _message_id(b"Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n") is None
    folded = b"Message-ID:\r\n <folded@x>\r\nSubject: s\r\n\r\nb"
    assert _message_id(folded) == extract_message_id(folded) == "<folded@x>"
