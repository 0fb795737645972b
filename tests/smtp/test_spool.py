"""The on-disk spool after a crash: entries come back, an entry cut short before its rename does not, and its
temporary file is removed (it was never acknowledged: 250 comes after the rename)."""

from __future__ import annotations

import pytest

from recall_lab.fake_servers.smtp.spool import Spool
from recall_lab.fake_servers.store import MaildirStore
from recall_lab.harness.lab import Lab


def test_an_entry_cut_short_is_removed_and_the_others_come_back(tmp_path) -> None:
    directory = tmp_path / "relay"
    spool = Spool(directory)
    spool.put("A1", {"to": ["dave@mail.example"]}, b"Subject: kept\r\n\r\nx\r\n")
    (directory / ".B2.msg.tmp").write_bytes(b'{"to":["erin@mail.exa')  # killed mid-write, before the rename
    (directory / "C3.msg.bad").write_bytes(b"set aside earlier, for a human to look at")
    again = Spool(directory)
    loaded = again.load()
    assert [(entry_id, record) for entry_id, record, _raw in loaded] == [("A1", {"to": ["dave@mail.example"]})]
    assert sorted(p.name for p in directory.iterdir()) == ["A1.msg", "C3.msg.bad"]


@pytest.mark.parametrize("spool", ["relay", "held"])
async def test_a_lab_restarted_on_a_maildir_cleans_both_spools(tmp_path, spool: str) -> None:
    """What `recall-lab serve --store maildir:DIR` finds after kill -9: leftovers gone once it is up."""
    root = tmp_path / "lab"
    async with Lab(store=f"maildir:{root}"):
        pass
    leftover = root / "corp.example" / "spool" / spool / ".0123ABCD.msg.tmp"
    leftover.write_bytes(b"{half")
    async with Lab(store=f"maildir:{root}") as lab:
        assert not leftover.exists()
        assert isinstance(lab.store("corp.example"), MaildirStore)
