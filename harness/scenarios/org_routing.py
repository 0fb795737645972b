"""The organisation's own routing at delivery: distribution lists and automatic forwarding to outside addresses.

Why these are delivery policies and not client behaviour: in Exchange both happen in the server before any client
sees the message. A distribution list is expanded into its members when the message is delivered, and a
mailbox's forwarding address gets its copy at delivery, "to another user's mailbox in or outside of your
organization" (docs/recall-sources.md section 9). So the recall meets what the server did: one recall to the
list's address is expanded the same way and acts per member; a forwarded copy went over SMTP to another
provider, where no recall reaches (section 1: "always fails for external recipients").

They plug into the servers' pipeline through its public registry (`register_policy`), like any module named in
a lab config's `policy_modules`; importing this module registers them for the organisation role. With no
settings they do nothing, so a lab that names no list and no forwarding is unchanged.

Settings (the organisation's `policies` table), and the same at run time through the policy objects
(`lab.services(domain).policy(NAME)`), which the trial engine uses for the accounts it creates per slot:
    distribution_lists = { "team@corp.example" = ["bob@corp.example", "carol@corp.example"] }
    forwarding = { "bob@corp.example" = "dave@mail.example" }

A list's address must be an account of the domain (the submission edge accepts only known local recipients);
its own mailbox stays empty, because the list policy replaces it by its members before final delivery. Order:
lists expand first (before the recall policy, so a recall to the list reaches its members); forwarding runs
after the recall policy (a cloud recall is consumed before it; a legacy recall, which is delivered as mail, is
not forwarded, so as not to carry the server's recall mark outside).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict, register_policy
from recall_lab.fake_servers.recall.format import has_recall_headers

LISTS = "distribution_lists"
FORWARDING = "forwarding"


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str) or "@" not in value:
        raise ValueError(f"policies.{where} must hold full addresses, got {value!r}")
    return value.strip().lower()


class DistributionLists:
    """Replaces a list's address among a delivery's recipients by its members (each once, first spelling)."""

    name = LISTS

    def __init__(self, settings: Mapping[str, Any], services: DomainServices) -> None:
        self.lists: dict[str, tuple[str, ...]] = {}
        table = settings.get(LISTS, {}) or {}
        if not isinstance(table, Mapping):
            raise ValueError(f"policies.{LISTS} must be a table of list address = [members]")
        for address, members in table.items():
            if isinstance(members, str) or not isinstance(members, list | tuple):
                raise ValueError(f"policies.{LISTS}.{address} must be a list of addresses")
            self.set_list(_address(address, LISTS), [_address(m, LISTS) for m in members])

    def set_list(self, address: str, members: list[str] | tuple[str, ...]) -> None:
        """Define (or redefine) a list; an empty member list removes it."""
        key = address.strip().lower()
        if members:
            self.lists[key] = tuple(dict.fromkeys(m.strip().lower() for m in members))
        else:
            self.lists.pop(key, None)

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        if not self.lists or not any(r.strip().lower() in self.lists for r in delivery.recipients):
            return Verdict.CONTINUE
        expanded: list[str] = []
        for rcpt in delivery.recipients:
            expanded.extend(self.lists.get(rcpt.strip().lower(), (rcpt,)))
        seen: set[str] = set()
        delivery.recipients[:] = [r for r in expanded if not (r.lower() in seen or seen.add(r.lower()))]
        services.log("list-expanded", queue_id=delivery.queue_id, recipients=list(delivery.recipients))
        return Verdict.CONTINUE


class Forwarding:
    """Sends each forwarded mailbox's ordinary mail on to its forwarding address, as a new submission."""

    name = FORWARDING

    def __init__(self, settings: Mapping[str, Any], services: DomainServices) -> None:
        self.rules: dict[str, str] = {}
        table = settings.get(FORWARDING, {}) or {}
        if not isinstance(table, Mapping):
            raise ValueError(f"policies.{FORWARDING} must be a table of mailbox = forwarding address")
        for user, target in table.items():
            self.set_forward(_address(user, FORWARDING), _address(target, FORWARDING))

    def set_forward(self, user: str, target: str | None) -> None:
        """Forward `user`'s mail to `target` from now on (None: stop forwarding)."""
        key = user.strip().lower()
        if target:
            self.rules[key] = target.strip().lower()
        else:
            self.rules.pop(key, None)

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        if not self.rules or has_recall_headers(delivery.raw):
            return Verdict.CONTINUE
        for rcpt in list(delivery.recipients):
            target = self.rules.get(rcpt.strip().lower())
            if target is None:
                continue
            # The copy keeps the original's fields (Message-ID too), as a server-side forward does, and says who
            # forwarded it in Resent-* fields; it goes through the whole pipeline, then the relay, to the target.
            head = f"Resent-From: {rcpt}\r\nResent-To: {target}\r\n".encode()
            queue_id = await services.submit(rcpt, [target], head + delivery.raw, channel="internal")
            services.log("auto-forwarded", queue_id=delivery.queue_id, user=rcpt, to=target, copy=queue_id)
        return Verdict.CONTINUE


register_policy(LISTS, DistributionLists, default_roles=("organisation",), order=10, settings=(LISTS,))
register_policy(FORWARDING, Forwarding, default_roles=("organisation",), order=85, settings=(FORWARDING,))
