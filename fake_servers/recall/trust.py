"""Who may recall what: the trust rules of recall processing, as pure functions over a delivery's envelope.

Why apart from the policy: the rules are the security of the whole feature and deserve to be read (and tested)
on their own. A recall (or a legacy notice) is honoured only when it entered through the organisation's
authenticated submission and the authenticated user, the envelope sender and the From address are one and the
same person; a recall then touches only copies of the original whose own From is that person. Headers never
confer trust: X-Recall-* in mail from MX, from another user or hand-written by anyone are just text.

"The From address" is read by the one reader the submission check and the clients use too
(`recall_lab.fake_servers.smtp.headers.author`): a From that two parsers read differently is nobody's. What the server
delivers in the sender's name on her behalf (a replace recall's replacement) passes the submission check of From.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage, Message

from recall_lab.fake_servers.smtp.canonical import line_problem
from recall_lab.fake_servers.smtp.headers import HeaderBlock, author, author_problem


@dataclass(frozen=True, slots=True)
class TrustDecision:
    honoured: bool
    reason: str  # why not (or "authenticated sender" when honoured), for the audit log


def from_address(msg: EmailMessage | Message | bytes) -> str | None:
    """The single From address in lower case; None when absent, when there are several (RFC 5322 Sender case),
    or when it does not read one way only. Pass the bytes when there are any (see headers.field_values)."""
    who = author(bytes(msg) if isinstance(msg, bytes | bytearray) else msg)
    return None if who is None else who.address


def judge_submission(channel: str, auth_user: str | None, mail_from: str, msg: EmailMessage,
                     local_domains: frozenset[str], claimed: str | None = None) -> TrustDecision:
    """Whether a recall/notice may be acted on. `claimed`: an address the message also claims to speak for
    (a notice's X-Recall-Recipient), which must be the same person too."""
    if channel != "submission":
        return TrustDecision(False, f"arrived via {channel}, not authenticated submission")
    if not auth_user:
        return TrustDecision(False, "not authenticated")
    user = auth_user.strip().lower()
    if user.rpartition("@")[2] not in local_domains:
        return TrustDecision(False, f"authenticated user {user} is not of this organisation")
    envelope = (mail_from or "").strip().lower()
    if envelope != user:
        return TrustDecision(False, f"envelope sender {envelope or '<>'} is not the authenticated user {user}")
    header_from = from_address(msg)
    if header_from != user:
        return TrustDecision(False, f"From {header_from or '(none)'} is not the authenticated user {user}")
    if claimed is not None and claimed.strip().lower() != user:
        return TrustDecision(False, f"speaks for {claimed} but was sent by {user}")
    return TrustDecision(True, "authenticated sender")


def judge_replacement(raw: bytes, sender: str) -> TrustDecision:
    """Whether the replacement of a replace recall may be delivered as the sender's mail. The server delivers it
    itself, straight into the recipients' mailboxes, past the submission check of From: so it must pass that same
    check (`headers.author_problem`: From and Sender name the sender, one way only) in a header block that reads
    one way for everybody (CRLF only, no irregular line). Else the recall is anyone's way to put mail in another
    person's name."""
    block = HeaderBlock(raw)
    problem = line_problem(raw) or block.problem() or author_problem(block, sender.strip().lower())
    if problem:
        return TrustDecision(False, f"the replacement cannot go out as {sender}'s mail: {problem}")
    return TrustDecision(True, "replacement written by the sender")


def copy_is_from(header_from: str | None, sender: str) -> bool:
    """Whether a stored copy of the original may be recalled by `sender`: only when the sender wrote it (a
    Message-ID is chosen by whoever sends, so an ID alone must never let one user delete another's mail)."""
    return header_from is not None and header_from == sender.strip().lower()
