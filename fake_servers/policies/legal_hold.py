"""The `legal_hold` policy: writes which mailboxes are held into the audit log when the domain starts.

Why this is hardly a delivery hook: a hold changes what *other* server-side removals do. The rule itself (the
held addresses, and preserving a message in the recoverable-items area before it leaves a held mailbox's view)
lives in fake_servers/recall/recoverable.py, beside the area, because the cloud recall applies it and this
package depends on the recall package, never the other way round. Retention applies the same rule; legacy
recall refuses to hand the recall to a held mailbox's clients at all, because the server cannot make a client's
own EXPUNGE recoverable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict, register_policy
from recall_lab.fake_servers.recall.recoverable import held_users


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
