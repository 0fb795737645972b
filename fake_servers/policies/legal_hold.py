"""The `legal_hold` policy: owns the domain's recoverable-items area (keeping, holds, the purge by the clock).

Why a policy owns it: what a domain keeps of deleted mail is an organisation setting (Exchange Online's single
item recovery, deleted item retention, holds: docs/recall-sources.md section 3), read from the domain's
`policies` table like every other, and the area needs a life cycle (a purge task on the domain's clock). The
rules and the area itself live in fake_servers/recall/recoverable.py, because the cloud recall reads the hold
list for its report and this package depends on the recall package, never the other way round.

Why the area is attached when the policy is built and not in `start`: the policies are built before any
listener opens and before any policy starts, and the recall policy's `start` may finish a recall a crash cut
short, which removes copies: those must be kept too. Nothing else removes mail on the area's behalf: the store's
removal hook tells it of every expunge (a client's, a recall's, retention's), so a hold needs no cooperation from
whoever deletes.

Not a delivery hook: `on_delivery` always continues. Tests and the Lab reach the running policy through the
domain's services: `recoverable_for(lab.services(domain)).purge_now()`, or the area itself,
`lab.services(domain).recoverable`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from recall_lab.fake_servers.background import cancel_and_wait
from recall_lab.fake_servers.pipeline import Delivery, DomainServices, Verdict, register_policy
from recall_lab.fake_servers.recall.recoverable import (
    QUOTA_SETTING,
    RETENTION_SETTING,
    SETTING,
    SINGLE_ITEM_RECOVERY_SETTING,
    RecoverableItems,
    RecoverableSettings,
)


def recoverable_for(services: DomainServices) -> LegalHoldPolicy | None:
    """The domain's legal_hold policy, when it runs one (its `purge_now()` purges what is due by the clock)."""
    policy = services.policy(LegalHoldPolicy.name)
    return policy if isinstance(policy, LegalHoldPolicy) else None


class LegalHoldPolicy:
    name = "legal_hold"

    def __init__(self, settings: Mapping[str, Any], services: DomainServices) -> None:
        self.settings = RecoverableSettings.from_settings(settings, services.domain)
        self.users = self.settings.held
        self.services = services
        self.area: RecoverableItems = services.recoverable
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.area.attach(services.store, self.settings, services.clock, log_event=services.log,
                         notify=self._kept)

    def _kept(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def start(self, services: DomainServices) -> None:
        if self.users:
            services.log("legal-hold", users=sorted(self.users))
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"recoverable items {services.domain}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self.area.detach()

    async def on_delivery(self, delivery: Delivery, services: DomainServices) -> Verdict:
        return Verdict.CONTINUE

    async def purge_now(self) -> int:
        """Purge the items kept for the retention period by the domain's clock; how many went."""
        return self.area.purge_due()

    async def _run(self) -> None:
        """Wait for the next item's deadline (or a new item), then purge what is due."""
        assert self._wake is not None
        while True:
            self._wake.clear()
            deadline = self.area.next_deadline()
            if deadline is None:
                await self._wake.wait()
            else:
                delay = deadline - self.services.clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self.area.purge_due()
            await asyncio.sleep(0)  # let other tasks run when items keep arriving


register_policy("legal_hold", LegalHoldPolicy, default_roles=("organisation",), order=90,
                settings=(SETTING, RETENTION_SETTING, SINGLE_ITEM_RECOVERY_SETTING, QUOTA_SETTING))
