"""The mail store: mailboxes, messages, flags, UIDs, MODSEQ, the Message-ID index, and change events.

`open_store("memory")` or `open_store("maildir:/some/dir")` gives a `MailStore`; see base.py for the API.
"""

from recall_lab.fake_servers.store.base import *  # noqa: F403
from recall_lab.fake_servers.store.base import MailStore, StoreError
from recall_lab.fake_servers.store.maildir import MaildirStore
from recall_lab.fake_servers.store.memory import MemoryStore


def open_store(spec: str) -> MailStore:
    """A store from a one-word spec: "memory", or "maildir:DIR" (DIR/<user>/ is each user's Maildir++).

    Why a spec string: the lab's config file and CLI name the store in one value (`--store maildir:./mail`).
    """
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "memory" and not sep:
        return MemoryStore()
    if kind == "maildir":
        if not arg.strip():
            raise StoreError("The maildir store needs a directory: maildir:DIR")
        return MaildirStore(arg.strip())
    raise StoreError(f"Unknown store {spec!r}: use 'memory' or 'maildir:DIR'")
