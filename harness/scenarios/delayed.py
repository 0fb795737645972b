"""Driving delayed send from a trial: cancel inside the window (over IMAP), or end the window (release).

Cancelling is what the sender does in her mail program: she deletes the message from her Outbox. So the trial
does exactly that over IMAP (UID STORE +FLAGS \\Deleted, UID EXPUNGE on "Outbox"); the server's delayed-send
policy (fake_servers/policies/delayed_send.py) hears the expunge and discards the held delivery. If the copy is
no longer in the Outbox, the message has left: too late.

Ending the window is the server's job, on its own timer. In simulated time a 60-second window passes in no real
time at all, so the engine ends it at its planned instant through the policy's lab API (`release_now`), as it
carries out every other planned event; the policy's own timer runs on real seconds and never fires first.
"""

from __future__ import annotations

from typing import Any

OUTBOX = "Outbox"


def _policy(lab: Any, domain: str) -> Any:
    from recall_lab.fake_servers.policies.delayed_send import delayed_send_for

    policy = delayed_send_for(lab.services(domain))
    if policy is None:
        raise LookupError(f"{domain} runs no delayed-send policy (policies.delayed_send_seconds)")
    return policy


async def release(lab: Any, domain: str, queue_id: str | None) -> None:
    """The outbox window ends: the held submission continues through the pipeline and is delivered."""
    if queue_id is None or not await _policy(lab, domain).release_now(queue_id):
        raise LookupError(f"no delivery {queue_id} held in {domain}'s outbox")
    await lab.wait_idle()


async def cancel(lab: Any, sender: str, password: str, message_id: str) -> bool:
    """The sender deletes the message from her Outbox over IMAP; False when it is no longer there (sent)."""
    from recall_lab.harness.clients.cache import search_quoted
    from recall_lab.harness.clients.connection import ImapConnection, endpoint_of

    host, port = endpoint_of(lab.imap(sender.rpartition("@")[2]))
    conn = ImapConnection(host, port, sender, password)
    await conn.open()
    try:
        if OUTBOX not in await conn.list_mailboxes():
            return False
        await conn.select(OUTBOX)
        uids = await conn.uid_search("HEADER", "Message-ID", search_quoted(message_id))
        if not uids:
            return False
        uid_set = ",".join(map(str, uids))
        await conn.uid_store(uid_set, "+FLAGS.SILENT", r"(\Deleted)")
        await conn.uid_expunge(uid_set)
    finally:
        await conn.logout()
    await lab.wait_idle(users=[sender])  # a domain on Dovecot: the policy hears of her expunge now
    return True


def still_held(lab: Any, domain: str, queue_id: str | None) -> bool:
    """Whether the delivery still waits in the outbox (the engine cancels leftovers when a trial fails)."""
    if queue_id is None:
        return False
    return any(p.queue_id == queue_id for p in _policy(lab, domain).pending())


def discard(lab: Any, domain: str, queue_id: str) -> None:
    """Drop a held delivery without a client (cleanup after a failed trial)."""
    _policy(lab, domain).cancel(queue_id)
