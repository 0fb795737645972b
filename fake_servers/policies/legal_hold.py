"""Legal hold: which mailboxes are held, and the rule that the server never destroys what they contain.

Config (the domain's `policies` table): `legal_hold = ["bob@corp.example", ...]` (local parts allowed).

Why this is a module of its own and hardly a delivery hook: a hold changes what *other* server-side removals do.
The cloud recall and the retention purge look the user up in `held_users()` before they expunge, and preserve
the message in the recoverable-items area (fake_servers/recall/recoverable.py) first; legacy recall refuses to
hand the recall to a held mailbox's clients at all, because the server cannot make a client's own EXPUNGE
recoverable. The policy registered here only writes the hold into the audit log at start, so the lab's log says
which mailboxes were held.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fake_servers.pipeline import Delivery, DomainServices, Verdict, register_policy
from fake_servers.recall.recoverable import RecoverableItem, recoverable_area
from fake_servers.store.base import MailStore

SETTING = "legal_hold"


def held_users(settings: Mapping[str, Any], domain: str) -> frozenset[str]:
    """The held addresses from the domain's settings (a list of addresses or local parts); ValueError if malformed."""
    value = settings.get(SETTING, ()) or ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"policies.{SETTING} must be a list of addresses")
    return frozenset((v if "@" in v else f"{v}@{domain}").strip().lower() for v in value)


def preserve_then_expunge(store: MailStore, user: str, mailbox: str, uid: int, reason: str) -> RecoverableItem:
    """Remove a held message from the user's view, keeping it in the recoverable-items area."""
    item = recoverable_area(store).preserve(store, user, mailbox, uid, reason)
    store.expunge(user, mailbox, [uid], origin=f"legal-hold:{reason}")
    return item


class LegalHoldPolicy:
    name = "legal_hold"

    def __init__(self, settings: Mapping[str, Any], services: DomainServices) -> None:
        self.users = held_users(settings, services.domain)

    async def start(self, services: DomainServices) -> None:
        if self.users:
            services.log("legal-hold", users=sorted(self.users))

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        return Verdict.CONTINUE


register_policy("legal_hold", LegalHoldPolicy, default_roles=("organisation",), order=90)
