"""SelectedMailbox.flush numbers EXPUNGE responses as a client applying them one by one expects (RFC 3501 7.4.1:
each number counts the messages left after the earlier expunges), also for a large, scattered expunge."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from recall_lab.fake_servers.imap.selected import SelectedMailbox
from recall_lab.fake_servers.store.base import MessageRecord

_WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def _mailbox(uids: list[int]) -> SelectedMailbox:
    records = [MessageRecord(uid=u, flags=frozenset(), internaldate=_WHEN, size=1, modseq=u, message_id=None) for u in uids]
    return SelectedMailbox("u@x", "INBOX", False, 1, records, set(), len(uids))


@given(st.lists(st.integers(1, 400), unique=True, max_size=120).map(sorted), st.data())
def test_expunge_numbers_match_a_client_applying_them_in_order(uids: list[int], data: st.DataObject) -> None:
    gone = data.draw(st.sets(st.sampled_from(uids))) if uids else set()
    sel = _mailbox(uids)
    sel.pending_expunge |= gone
    out = bytearray()
    sel.flush(out, allow_expunge=True, qresync=False, condstore=False)
    client = list(uids)
    for line in bytes(out).splitlines():
        if line.endswith(b" EXPUNGE"):
            del client[int(line.split()[1]) - 1]
    assert client == [u for u in uids if u not in gone] == sel.uids
    assert set(sel.records) == set(sel.uids)
