"""The embedded default store: everything in memory, gone when the process ends.

Why so thin: all rules live in `_core.CoreStore`; this class only says where a message's bytes are kept
(a dict per mailbox). A copied message shares the bytes object with its source, so COPY costs no memory.
"""

from __future__ import annotations

from recall_lab.fake_servers.store._core import Account, CoreStore, MailboxState
from recall_lab.fake_servers.store.base import MessageRecord


class MemoryStore(CoreStore):
    """`MailStore` in memory. Example::

        store = MemoryStore()
        store.ensure_user("alice@corp.example")
        store.deliver("alice@corp.example", b"Message-ID: <1@x>\\r\\n\\r\\nhi\\r\\n")
    """

    def _persist_create(self, account: Account, mbox: MailboxState) -> None:
        mbox.backend = {}

    def _persist_append(self, account: Account, mbox: MailboxState, record: MessageRecord, raw: bytes) -> None:
        mbox.backend[record.uid] = raw

    def _read_raw(self, account: Account, mbox: MailboxState, record: MessageRecord) -> bytes:
        return mbox.backend[record.uid]

    def _persist_expunge(self, account: Account, mbox: MailboxState, records: list[MessageRecord]) -> None:
        blobs = mbox.backend
        for record in records:
            del blobs[record.uid]
