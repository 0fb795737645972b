"""RFC 8474 object identifiers: MAILBOXID, EMAILID, THREADID, derived from what the store already keeps.

Why derived and not stored: the store contract (`MailStore`) has no field for them, and both can be computed
from data that survives a restart of the Maildir store unchanged:

- MAILBOXID from the user and the mailbox's UIDVALIDITY. The store gives every mailbox of an account its own
  UIDVALIDITY (always above any value given before, also across restarts), keeps it on RENAME and never gives
  it again after DELETE, which is exactly the life RFC 8474 section 4 asks of a MAILBOXID. RENAME of INBOX
  moves its messages to a new mailbox (new UIDVALIDITY, so a new MAILBOXID) and INBOX keeps its own.
- EMAILID from the message's bytes. RFC 8474 section 5.1 requires the id of a message COPY'd or MOVE'd to be
  the source's; UIDVALIDITY + UID would change with the mailbox, the bytes do not (the store copies them as they
  are). Two messages with identical bytes share an id, which section 5.1 allows ("MAY assign the same EMAILID").
- THREADID: NIL (section 5.2 allows it for a server that does not thread).

The ids are hashes, so they say nothing of the user, the mailbox or the message, and fit `objectid`
(1*255 ALPHA / DIGIT / "_" / "-").
"""

from __future__ import annotations

import hashlib


def mailbox_id(user: str, uidvalidity: int) -> str:
    """The MAILBOXID of `user`'s mailbox with this UIDVALIDITY."""
    digest = hashlib.blake2b(f"{user.lower()}\0{uidvalidity}".encode(), digest_size=12, person=b"mailboxid")
    return "F" + digest.hexdigest()


def email_id(raw: bytes) -> str:
    """The EMAILID of a message with these bytes."""
    return "M" + hashlib.blake2b(raw, digest_size=12, person=b"emailid").hexdigest()


#: What FETCH THREADID answers: this server does not thread messages (RFC 8474 5.2: NIL).
THREAD_ID: str | None = None
