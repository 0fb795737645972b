"""The simulated user: reproducible delays, previews, rules, opening."""

from __future__ import annotations

import math
import statistics

from recall_lab.harness.clients.preview import Preview, first_line, preview_of
from recall_lab.harness.clients.user import (
    ExponentialDelay,
    FixedDelay,
    LogNormalDelay,
    MoveRule,
    NeverOpens,
    SimulatedUser,
)


class FakeClient:
    name = "fake"

    def __init__(self) -> None:
        self.messages = {"<a@x>": Preview("Lunch?", "Shall we meet at noon", "alice@corp.example")}
        self.opened: list[str] = []
        self.moves: list[tuple[str, str]] = []

    def preview(self, mid):
        return self.messages.get(mid)

    def has_message_id(self, mid):
        return mid in self.messages

    async def open(self, mid):
        self.opened.append(mid)
        return b"raw"

    async def move(self, mid, folder):
        self.moves.append((mid, folder))


def test_same_seed_same_delays_different_seed_different():
    def delays(seed):
        user = SimulatedUser("bob@corp.example", FakeClient(), seed=seed)
        return [user.sample_open_delay() for _ in range(5)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_distributions_have_their_documented_centre():
    import random

    rng = random.Random(1)
    lognormal = [LogNormalDelay(median=60, sigma=1.0).sample(rng) for _ in range(4000)]
    assert 50 < statistics.median(lognormal) < 70
    expo = [ExponentialDelay(mean=120).sample(rng) for _ in range(4000)]
    assert 110 < statistics.mean(expo) < 130
    assert FixedDelay(3).sample(rng) == 3
    assert math.isinf(NeverOpens().sample(rng))


def test_preview_only_where_the_client_shows_one():
    shown = SimulatedUser("bob@corp.example", FakeClient(), seed=1)
    assert shown.on_arrival("<a@x>").subject == "Lunch?" and shown.saw_preview("<a@x>")
    hidden = SimulatedUser("bob@corp.example", FakeClient(), seed=1, shows_preview=False)
    assert hidden.on_arrival("<a@x>") is None and not hidden.saw_preview("<a@x>")


async def test_rule_moves_matching_messages_only():
    client = FakeClient()
    user = SimulatedUser("bob@corp.example", client, seed=1,
                         rule=MoveRule("Projects", match=lambda p: p.subject.startswith("Lunch")))
    assert await user.apply_rule("<a@x>")
    assert client.moves == [("<a@x>", "Projects")]
    other = SimulatedUser("bob@corp.example", client, seed=1, rule=MoveRule("X", match=lambda p: False))
    assert not await other.apply_rule("<a@x>")


async def test_run_with_an_injected_wait():
    client = FakeClient()
    waited: list[float] = []

    async def wait(seconds: float) -> None:
        waited.append(seconds)

    user = SimulatedUser("bob@corp.example", client, seed=3, open_delay=FixedDelay(42))
    assert await user.run("<a@x>", wait=wait) == 42
    assert waited == [42] and client.opened == ["<a@x>"] and user.has_read("<a@x>")
    never = SimulatedUser("bob@corp.example", client, seed=3, open_delay=NeverOpens())
    assert math.isinf(await never.run("<a@x>", wait=wait))
    assert not never.has_read("<a@x>")


def test_preview_helpers():
    raw = b"From: a@x\r\nSubject: Hi\r\n there\r\nContent-Type: text/plain\r\n\r\n\r\n  First   line \r\nnext\r\n"
    assert preview_of(raw) == Preview("Hi there", "First line", "a@x")
    assert first_line("\n\n") == ""


async def test_user_with_real_clients(lab, tmp_path):
    """Preview on arrival in the desktop client, a rule moves it, the user opens it later: \\Seen on the server."""
    import aiosmtplib

    from recall_lab.harness.clients.desktop import DesktopClient
    from recall_lab.harness.clients.web import WebClient
    from tests.clients.conftest import make_message, new_mid

    store = lab.store("corp.example")
    store.create_mailbox("bob@corp.example", "Lunch")
    mid = new_mid()
    async with DesktopClient("bob@corp.example", "bob-password", lab.imap("corp.example"),
                             folders=("INBOX", "Lunch")) as desktop:
        user = SimulatedUser("bob@corp.example", desktop, seed=5, open_delay=FixedDelay(1),
                             rule=MoveRule("Lunch", match=lambda p: "Lunch" in p.subject))
        endpoint = lab.submission("corp.example")
        await aiosmtplib.send(make_message(mid, subject="Lunch?"), sender="alice@corp.example",
                              recipients=["bob@corp.example"], hostname=endpoint.host, port=endpoint.port,
                              username="alice@corp.example", password="alice-password", start_tls=False,
                              local_hostname="corp.example")
        await desktop.wait_for_message(mid)
        assert user.on_arrival(mid).subject == "Lunch?"
        assert await user.apply_rule(mid)
        await desktop.wait_for(lambda: [m.folder for m in desktop.cache.find(mid)] == ["Lunch"])
        await user.open(mid)
    [location] = store.find_by_message_id("bob@corp.example", mid)
    assert location.mailbox == "Lunch"
    assert "\\Seen" in store.messages("bob@corp.example", "Lunch")[0].flags

    web = WebClient("bob@corp.example", "bob-password", lab.web.url, tmp_path, folder="Lunch")
    web_user = SimulatedUser("bob@corp.example", web, seed=5, shows_preview=False)
    await web.page_load()
    assert web_user.on_arrival(mid) is None
    await web_user.open(mid)
    assert web.snapshot_visible(mid)
