"""Lab.start refuses in one line (LabStartError): an unusable store, a policy that rejects its settings; and
BlockingLab.call keeps "the call timed out" apart from a TimeoutError raised by the work itself."""

from __future__ import annotations

import asyncio

import pytest

import recall_lab.harness.backends as backends_module
from recall_lab.fake_servers.pipeline import register_policy, unregister_policy
from recall_lab.fake_servers.store import base as store_base
from recall_lab.harness.config import DomainConfig, LabConfig
from recall_lab.harness.lab import BlockingLab, Lab, LabStartError


@pytest.mark.parametrize("make_dir", ["missing", "a-file"])
async def test_unusable_maildir_is_one_line_lab_start_error(tmp_path, make_dir):
    target = tmp_path / "nope" / "deeper"
    if make_dir == "a-file":
        target = tmp_path / "afile"
        target.write_text("not a directory")
    else:
        (tmp_path / "nope").write_text("a file where a directory should be")
    with pytest.raises(LabStartError) as info:
        async with Lab(store=f"maildir:{target}"):
            pass
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"cannot use store maildir:{target}: "), text
    assert "Mail storage error" not in text


async def test_any_store_error_while_opening_becomes_lab_start_error(tmp_path, monkeypatch):
    """StoreLocked (another process holds the maildir) is a StoreError: it must reach the user as one line."""
    class Locked(store_base.StoreError):
        pass

    def locked(spec: str):
        raise Locked("Mail storage error: maildir is in use by\nanother process (pid 4242)")

    monkeypatch.setattr(backends_module, "open_store", locked)  # where the Lab's domains get their stores
    with pytest.raises(LabStartError) as info:
        await Lab(store=f"maildir:{tmp_path}").start()
    assert str(info.value) == f"cannot use store maildir:{tmp_path}: maildir is in use by another process (pid 4242)"


class _Picky:
    name = "picky"

    def __init__(self, settings, services):
        if not isinstance(settings.get("picky_level", 1), int):
            raise ValueError("policies.picky_level must be an integer")

    async def on_delivery(self, delivery, services):
        raise AssertionError("never runs")


async def test_policy_rejecting_its_settings_is_lab_start_error_naming_domain_and_setting():
    register_policy("picky", _Picky)
    try:
        config = LabConfig(domains=[DomainConfig(name="corp.example", role="organisation",
                                                 users={"alice@corp.example": "alice-password"},
                                                 pipeline=["picky"], policies={"picky_level": "high"})])
        with pytest.raises(LabStartError) as info:
            async with Lab(config):
                pass
    finally:
        unregister_policy("picky")
    text = str(info.value)
    assert "\n" not in text
    assert "corp.example" in text and "picky" in text and "policies.picky_level" in text, text


def test_blocking_call_keeps_a_timeout_inside_the_work_apart_from_the_call_timing_out():
    with BlockingLab() as lab:
        async def fails():
            raise TimeoutError("the server never answered")

        with pytest.raises(TimeoutError, match="the server never answered"):
            lab.call(fails(), timeout=30)

        with pytest.raises(TimeoutError, match="did not finish in 0.05 s"):
            lab.call(asyncio.Event().wait(), timeout=0.05)
        assert lab.call(lambda: 42) == 42  # the loop is still fine
