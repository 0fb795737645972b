"""The organisation's routing at delivery (distribution lists, forwarding to an outside address) over real SMTP,
and a recall to a list acting per member, in both modes."""

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import pytest

from recall_lab.harness.config import default_config
from recall_lab.harness.lab import Lab
from recall_lab.harness.scenarios import org_routing  # noqa: F401 - registers the two policies
from recall_lab.harness.scenarios.org_routing import DistributionLists

TEAM = "team@corp.example"


def _config(mode: str):
    config = default_config()
    org = config.domain("corp.example")
    org.users = {**org.users, TEAM: "team-password"}
    org.policies.update({"recall_mode": mode,
                         "distribution_lists": {TEAM: ["bob@corp.example", "carol@corp.example"]},
                         "forwarding": {"carol@corp.example": "erin@mail.example"}})
    return config


async def _send(lab, to: str) -> str:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@corp.example", to, "Team figures"
    msg["Message-ID"] = mid = make_msgid(domain="corp.example")
    msg.set_content("The figures are wrong.\n")
    ep = lab.submission("corp.example")
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username="alice@corp.example",
                          password="alice-password", local_hostname="localhost", start_tls=False)
    await lab.wait_idle()
    return mid


@pytest.mark.parametrize("mode", ["cloud", "legacy"])
async def test_list_is_expanded_and_a_member_forwards_outside(mode: str) -> None:
    async with Lab(_config(mode), store="memory") as lab:
        mid = await _send(lab, TEAM)
        org, ext = lab.store("corp.example"), lab.store("mail.example")
        assert org.find_by_message_id("bob@corp.example", mid) and org.find_by_message_id("carol@corp.example", mid)
        assert not org.find_by_message_id(TEAM, mid)  # the list is not a mailbox that keeps mail
        [loc] = ext.find_by_message_id("erin@mail.example", mid)  # carol's forwarding: a relay hop away
        raw = ext.fetch_raw("erin@mail.example", loc.mailbox, loc.uid)
        assert b"Resent-From: carol@corp.example" in raw and b"The figures are wrong." in raw


async def test_cloud_recall_to_the_list_reaches_every_member_but_not_the_forwarded_copy() -> None:
    from recall_lab.harness.recall_agent import RecallAgent

    async with Lab(_config("cloud"), store="memory") as lab:
        mid = await _send(lab, TEAM)
        handle = await RecallAgent(lab, "alice@corp.example", "alice-password").recall(mid)
        report = await handle.report(timeout=10)
        assert {r: s.value for r, s in report.statuses.items()} == {"bob@corp.example": "recalled",
                                                                   "carol@corp.example": "recalled"}
        org, ext = lab.store("corp.example"), lab.store("mail.example")
        assert not org.find_by_message_id("bob@corp.example", mid)
        assert not org.find_by_message_id("carol@corp.example", mid)
        assert ext.find_by_message_id("erin@mail.example", mid)  # escaped: another provider


async def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="list of addresses"):
        DistributionLists({"distribution_lists": {TEAM: "bob@corp.example"}}, services=None)  # type: ignore[arg-type]
    config = default_config()
    config.domain("corp.example").policies["forwarding"] = {"bob@corp.example": "nobody"}
    from recall_lab.harness.lab import LabStartError

    with pytest.raises((LabStartError, ValueError), match="full addresses"):
        async with Lab(config, store="memory"):
            pass
