"""Where a message ends up once the policies are done with it: local mailboxes (with Return-Path and
Delivered-To), the sender's Sent folder, the relay queue for other domains, or the spool of held messages.

Why its own module: the pipeline only decides (docs/pipeline.md); these classes carry the decision out, and they
are also what a policy reaches through `services.deliver_local`, `services.save_sent_copy`, `services.held` and
`services.discard`, so the policies and the domain's own final delivery write mail the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.pipeline import Delivery
from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.smtp.canonical import to_crlf
from recall_lab.fake_servers.smtp.relay import Failure, RelayQueue
from recall_lab.fake_servers.smtp.spool import Spool
from recall_lab.fake_servers.stamping import delivery_trace
from recall_lab.fake_servers.store.base import MailStore, MessageRecord, StoreError


class FinalDelivery:
    """Local delivery, the Sent copy and the hand-over to the relay queue for one domain."""

    def __init__(self, store: MailStore, accounts: Accounts, local_domains: Iterable[str],
                 relay: RelayQueue) -> None:
        self.store = store
        self.accounts = accounts
        self.local_domains = frozenset(d.lower() for d in local_domains)
        self.relay = relay
        self._sent_names: dict[str, str] = {}

    def deliver(self, delivery: Delivery, local: Sequence[str], remote: Sequence[str]) -> list[Failure]:
        """What the pipeline decided for a delivery every policy let through: the Sent copy (when asked for),
        `local` into their INBOX, `remote` to the relay queue. Returns the local recipients that do not exist
        (for a DSN); the SMTP edge refuses those already, so only internal submissions meet them."""
        if delivery.save_sent_copy:
            self.save_sent_copy(delivery)
        failures = []
        for rcpt in local:
            user = self.accounts.canonical(rcpt)
            if user is None:
                failures.append(Failure(rcpt, "5.1.1", f"smtp; 550 5.1.1 <{rcpt}>: user unknown"))
                continue
            self._deliver(user, delivery.raw, delivery.mail_from, "INBOX")
        if remote:
            self.relay.enqueue(delivery.queue_id, delivery.mail_from, remote, delivery.raw, delivery.smtputf8)
        return failures

    def deliver_local(self, user: str, raw: bytes, *, mail_from: str = "", mailbox: str = "INBOX"
                      ) -> MessageRecord:
        """Into the store with Return-Path and Delivered-To (what policies call): CRLF line ends whatever a
        policy handed over, as the store keeps only the canonical form."""
        return self._deliver(user, to_crlf(raw), mail_from, mailbox)

    def _deliver(self, user: str, raw: bytes, mail_from: str, mailbox: str) -> MessageRecord:
        """`raw` (canonical already: through the edge or `deliver_local`) with its trace fields, into the store."""
        return self.store.deliver(user, delivery_trace(raw, mail_from, user), mailbox)

    def save_sent_copy(self, delivery: Delivery) -> MessageRecord | None:
        """The sender's own copy, \\Seen, in their Sent folder, with a Bcc header naming the Bcc recipients:
        the sender must be able to find (and later recall from) everyone it wrote to."""
        sender_is_local = delivery.mail_from.rpartition("@")[2].lower() in self.local_domains
        owner = delivery.auth_user or (delivery.mail_from if sender_is_local else None)
        user = self.accounts.canonical(owner) if owner else None
        if user is None:
            return None
        raw = delivery.raw
        if delivery.bcc:
            raw = headers.append_headers(headers.remove_headers(raw, ["Bcc"]), [("Bcc", ", ".join(delivery.bcc))])
        try:
            return self.store.append(user, self._sent_mailbox(user), raw, ["\\Seen"])
        except StoreError:  # the Sent folder was renamed or deleted since it was cached: look again
            self._sent_names.pop(user, None)
            return self.store.append(user, self._sent_mailbox(user), raw, ["\\Seen"])

    def _sent_mailbox(self, user: str) -> str:
        """The user's \\Sent mailbox (cached: listing every mailbox per message would dominate delivery;
        save_sent_copy forgets the cache when an append to it fails)."""
        name = self._sent_names.get(user)
        if name is not None:
            return name
        name = "Sent"
        for info in self.store.list_mailboxes(user):
            if info.special_use == "\\Sent":
                name = info.name
                break
        self._sent_names[user] = name
        return name


class HeldMail:
    """Deliveries a policy holds (delayed send), in memory and in the spool (on disk with Maildir), so they come
    back after a restart."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._held: dict[str, Delivery] = {}

    def load(self) -> None:
        """What the spool kept from an earlier run."""
        for entry_id, record, raw in self.spool.load():
            self._held[entry_id] = Delivery.from_record(record, raw)

    def hold(self, delivery: Delivery) -> None:
        self._held[delivery.queue_id] = delivery
        self.spool.put(delivery.queue_id, delivery.to_record(), delivery.raw)

    def take(self, queue_id: str) -> Delivery:
        """Out of the held set for a release; it stays spooled until `released` (KeyError when not held)."""
        return self._held.pop(queue_id)

    def put_back(self, delivery: Delivery) -> None:
        """A release that failed before anything held the delivery again: held as it was (still spooled)."""
        self._held[delivery.queue_id] = delivery

    def released(self, queue_id: str) -> None:
        """A release ran to its end: off the spool, unless a policy held the delivery again."""
        if queue_id not in self._held:
            self.spool.remove(queue_id)

    def __contains__(self, queue_id: object) -> bool:
        return queue_id in self._held

    def discard(self, queue_id: str) -> Delivery:
        delivery = self._held.pop(queue_id)
        self.spool.remove(queue_id)
        return delivery

    def held(self) -> list[Delivery]:
        return list(self._held.values())
