"""The one way a message enters a domain's server and the one place that acts on what the pipeline decided.

Why: SMTP acceptance (`accept`), the server's own mail (`submit`: recall reports, DSNs, policy re-submissions)
and a released held message (`release`) all take the same path: stamp (stamping.py), run the policies
(pipeline.py, which only returns its result), then carry the result out (delivery.py): deliver, relay, hold,
nothing (consumed), or refuse. The pipeline never calls back; as h11 returns events to its user, it returns a
`PipelineResult` and this module does what it says. The whole run is protected from the caller's cancellation
(background.py), so a message answered 250 is delivered and a message not answered is not half delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from recall_lab.fake_servers.activity import Activity
from recall_lab.fake_servers.background import BackgroundTasks
from recall_lab.fake_servers.delivery import FinalDelivery, HeldMail
from recall_lab.fake_servers.pipeline import (
    Channel,
    Consumed,
    Deliver,
    Delivery,
    Hold,
    Pipeline,
    PolicyReject,
    Rejected,
)
from recall_lab.fake_servers.smtp import headers
from recall_lab.fake_servers.smtp.dsn import build_dsn
from recall_lab.fake_servers.smtp.relay import Failure, RelayEntry
from recall_lab.fake_servers.stamping import Stamper, needs_smtputf8

log = logging.getLogger(__name__)


class Intake:
    """Acceptance, internal submission, release of held mail and bounces for one domain.

    The pipeline's policies reach this object back through `services.submit` / `services.release` (documented
    in docs/pipeline.md), so it is wired to the pipeline once both exist (`connect`)."""

    def __init__(self, domain: str, stamper: Stamper, final: FinalDelivery, held: HeldMail,
                 tasks: BackgroundTasks, activity: Activity | None = None) -> None:
        self.domain = domain
        self.activity = activity if activity is not None else Activity()
        self.stamper = stamper
        self.final = final
        self.held = held
        self.tasks = tasks
        self._pipeline: Pipeline | None = None

    def connect(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError(f"{self.domain}: the intake has no pipeline yet")
        return self._pipeline

    # -- the entry points ---------------------------------------------------------------------------------
    async def accept(self, *, channel: Channel, auth_user: str | None, mail_from: str, recipients: list[str],
                     raw: bytes, smtputf8: bool, helo: str | None, peer: Any, tls: bool,
                     header_block: headers.HeaderBlock | None = None) -> str:
        """A message from the SMTP edge; returns the reply to DATA (250 only once it is delivered/queued/held)."""
        delivery = self._stamp(channel=channel, auth_user=auth_user, mail_from=mail_from, recipients=recipients,
                               raw=raw, smtputf8=smtputf8, helo=helo, peer=peer, tls=tls, block=header_block)
        try:
            await self.tasks.run_protected(self._process(delivery), f"deliver {delivery.queue_id}")
        except PolicyReject as exc:
            return exc.reply
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: delivery of %s failed", self.domain, delivery.queue_id)
            return "451 4.3.0 Local error in processing; try again later"
        self.activity.publish(self.domain, "accepted", channel=channel, queue_id=delivery.queue_id,
                              mail_from=delivery.mail_from, recipients=list(delivery.recipients),
                              message_id=delivery.message_id, auth_user=auth_user)
        return f"250 2.0.0 Ok: queued as {delivery.queue_id}"

    async def submit(self, mail_from: str, recipients: Sequence[str], raw: bytes, *,
                     channel: Channel = "internal", marks: Iterable[str] = (), save_sent_copy: bool = False,
                     auth_user: str | None = None) -> str:
        """The server's own mail through the same path; PolicyReject reaches the caller. Returns the queue id."""
        delivery = self._stamp(channel=channel, auth_user=auth_user, mail_from=mail_from,
                               recipients=list(recipients), raw=raw,
                               smtputf8=needs_smtputf8(mail_from, recipients), marks=set(marks),
                               save_sent_copy=save_sent_copy)
        await self.tasks.run_protected(self._process(delivery), f"submit {delivery.queue_id}")
        return delivery.queue_id

    async def release(self, queue_id: str) -> None:
        """Resume a held delivery at the policy after the one that held it (KeyError when not held)."""
        delivery = self.held.take(queue_id)
        held_by, delivery.held_by = delivery.held_by, None
        try:
            # shielded: a policy's timer task cancelled at shutdown must not cut a delivery in half
            await asyncio.shield(self.tasks.track(self._process(delivery, start_after=held_by),
                                                  f"release {queue_id}"))
        except BaseException:
            if queue_id not in self.held:  # failed before anyone held it again: keep it held
                delivery.held_by = held_by
                self.held.put_back(delivery)
            raise
        self.held.released(queue_id)

    async def bounce(self, entry: RelayEntry, failures: list[Failure], gave_up: bool) -> None:
        """The relay queue gave up on (or is still trying) some recipients: a DSN to the sender."""
        if not entry.mail_from:
            log.warning("%s: bounce of a bounce dropped (%s)", self.domain, entry.id)
            return
        await self._send_dsn(entry.mail_from, entry.raw, failures, entry.queue_id,
                             datetime.fromtimestamp(entry.created, UTC), gave_up=gave_up)

    # -- the one path ---------------------------------------------------------------------------------
    def _stamp(self, **fields: Any) -> Delivery:
        stamped = self.stamper.stamp(**fields)
        if stamped.mark_stripped:
            d = stamped.delivery
            self.pipeline.services.log("recall-mark-stripped", queue_id=d.queue_id, channel=d.channel,
                                       mail_from=d.mail_from)
        return stamped.delivery

    async def _process(self, delivery: Delivery, start_after: str | None = None) -> None:
        """Run the policies, then do what their result says. A refusal is raised (PolicyReject) so that every
        caller refuses the same way: `accept` answers it, `submit` and `release` pass it on."""
        result = await self.pipeline.run(delivery, start_after=start_after)
        match result:
            case Deliver(delivery=d, local=local, remote=remote):
                failures = self.final.deliver(d, local, remote)
                if failures and d.mail_from:
                    await self._send_dsn(d.mail_from, d.raw, failures, d.queue_id, d.received_at, gave_up=False)
            case Hold(delivery=d):
                self.held.hold(d)
            case Consumed():
                pass
            case Rejected(error=error):
                raise error

    async def _send_dsn(self, to: str, original: bytes, failures: list[Failure], queue_id: str,
                        arrival: datetime, gave_up: bool) -> None:
        dsn = build_dsn(reporting_domain=self.domain, original_from=to, original_raw=original, failures=failures,
                        queue_id=queue_id, arrival=arrival, gave_up=gave_up)
        self.pipeline.services.log("dsn", queue_id=queue_id, to=to, recipients=[f.recipient for f in failures],
                                   status=[f.status for f in failures])
        await self.submit("", [to], dsn, channel="internal")
