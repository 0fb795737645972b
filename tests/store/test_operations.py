"""The store's write-ahead records (begin_operation / end_operation / unfinished_operations), on both stores.

Why they matter: a change across many mailboxes (a cloud recall) records its decision here before its first
step, so a crash half-way leaves a record its author finishes at the next start. These pin the contract: a
record is JSON, copied in and out, durable across a restart on disk, gone once ended; a record whose write a
crash cut short never existed.
"""

from __future__ import annotations

import json

import pytest

from recall_lab.fake_servers.store import MaildirStore
from recall_lab.fake_servers.store._operations import DIRECTORY
from recall_lab.fake_servers.store.base import StoreError


def test_begin_end_and_the_records_are_copies(store) -> None:
    assert store.unfinished_operations() == {}
    store.begin_operation("recall-1", {"kind": "k", "users": ["bob@corp.example"], "n": 1})
    store.begin_operation("recall-2", {"kind": "k"})
    records = store.unfinished_operations()
    assert records == {"recall-1": {"kind": "k", "users": ["bob@corp.example"], "n": 1},
                       "recall-2": {"kind": "k"}}
    records["recall-1"]["users"].append("mallory")
    assert store.unfinished_operations()["recall-1"]["users"] == ["bob@corp.example"]
    store.begin_operation("recall-2", {"kind": "k", "step": 2})  # begun again: replaced
    store.end_operation("recall-1")
    store.end_operation("never-begun")
    assert store.unfinished_operations() == {"recall-2": {"kind": "k", "step": 2}}


@pytest.mark.parametrize("op_id", ["", ".hidden", "a/b", "../x", "a b", "x" * 300, "é"])
def test_ids_that_could_name_another_file_are_refused(store, op_id: str) -> None:
    with pytest.raises(StoreError):
        store.begin_operation(op_id, {"kind": "k"})
    assert store.unfinished_operations() == {}


@pytest.mark.parametrize("record", [{"raw": b"bytes"}, {"x": float("nan")}, {"s": {1, 2}}])
def test_a_record_that_is_not_json_is_refused_alike_on_both_stores(store, record) -> None:
    with pytest.raises(StoreError):
        store.begin_operation("op", record)
    assert store.unfinished_operations() == {}


def test_records_survive_a_restart_and_ended_ones_do_not(tmp_path) -> None:
    root = tmp_path / "mail"
    first = MaildirStore(root)
    first.begin_operation("recall-a", {"kind": "k", "left": ["carol@corp.example"]})
    first.begin_operation("recall-b", {"kind": "k"})
    first.end_operation("recall-b")
    first.close()
    again = MaildirStore(root)
    try:
        assert again.unfinished_operations() == {"recall-a": {"kind": "k", "left": ["carol@corp.example"]}}
        assert again.users() == []  # the records' directory is no user's home
    finally:
        again.close()


def test_a_record_a_crash_cut_short_never_began_and_a_damaged_one_is_set_aside(tmp_path) -> None:
    root = tmp_path / "mail"
    MaildirStore(root).close()
    directory = root / DIRECTORY
    (directory / ".recall-x.json.tmp").write_text('{"kind": "k", "half')  # killed before the rename
    (directory / "recall-y.json").write_text("not json")
    (directory / "recall-z.json").write_text(json.dumps({"kind": "k"}))
    store = MaildirStore(root)
    try:
        assert store.unfinished_operations() == {"recall-z": {"kind": "k"}}
        assert sorted(p.name for p in directory.iterdir()) == ["recall-y.bad", "recall-z.json"]
    finally:
        store.close()
