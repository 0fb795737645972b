"""The mail store: mailboxes, messages, flags, UIDs, MODSEQ, the Message-ID index, and change events."""

from fake_servers.store.base import *  # noqa: F403
