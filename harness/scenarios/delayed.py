"""Driving delayed send from a trial: end the outbox window (release) or cancel inside it.

Why the trial ends the window itself instead of letting the policy's timer do it: in simulated time a 60-second
window passes in no real time at all, so the engine carries out "the window ends" at its planned instant, as it
does every other event. The server's delayed-send policy (fake_servers/policies/delayed_send.py) holds the
submission (pipeline verdict HOLD); releasing or discarding a held delivery goes through the domain's public
`DomainServices.release(queue_id)` / `discard(queue_id)`, the primitives the policy itself uses.
"""

from __future__ import annotations

from typing import Any


def _held_ids(services: Any) -> set[str]:
    return {d.queue_id for d in services.held()}


async def release(lab: Any, domain: str, queue_id: str | None) -> None:
    """The outbox window ends: the held submission continues through the pipeline and is delivered."""
    services = lab.services(domain)
    if queue_id is None or queue_id not in _held_ids(services):
        raise LookupError(f"no delivery {queue_id} held in {domain}'s outbox (is delayed send configured?)")
    await services.release(queue_id)
    await lab.wait_idle()


async def cancel(lab: Any, domain: str, queue_id: str | None) -> bool:
    """Cancel a held submission; False when it is no longer held (it has left the outbox)."""
    services = lab.services(domain)
    if queue_id is None or queue_id not in _held_ids(services):
        return False
    services.discard(queue_id)
    return True
