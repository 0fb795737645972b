"""The desktop client's cache: memory and SQLite behave the same; SQLite survives a restart."""

from __future__ import annotations

import pytest

from recall_lab.harness.clients.cache import (
    CachedMessage,
    FolderState,
    MessageCache,
    SqliteMessageCache,
    message_id_of,
    search_quoted,
)


@pytest.fixture(params=["memory", "sqlite"])
def cache(request, tmp_path):
    made = MessageCache() if request.param == "memory" else SqliteMessageCache(tmp_path / "c.sqlite3")
    yield made
    made.close()


def msg(folder: str, uid: int, mid: str | None = "<a@x>", flags=frozenset()) -> CachedMessage:
    return CachedMessage(folder, uid, b"raw%d" % uid, frozenset(flags), mid)


def test_put_find_remove(cache):
    cache.put(msg("INBOX", 1))
    cache.put(msg("Projects", 4))
    cache.put(msg("INBOX", 2, "<b@x>"))
    assert [m.uid for m in cache.find("a@x")] == [1, 4]
    assert "<b@x>" in cache and len(cache) == 3
    assert cache.uids("INBOX") == [1, 2]
    assert cache.remove("INBOX", 1) and not cache.remove("INBOX", 1)
    assert [m.folder for m in cache.find("<a@x>")] == ["Projects"]
    assert cache.clear_folder("Projects") == [4]
    assert "a@x" not in cache


def test_flags_and_state(cache):
    cache.put(msg("INBOX", 1))
    assert cache.set_flags("INBOX", 1, frozenset({"\\Seen"}))
    assert not cache.set_flags("INBOX", 1, frozenset({"\\Seen"}))
    assert not cache.set_flags("INBOX", 99, frozenset())
    assert cache.get("INBOX", 1).seen
    assert cache.state("INBOX") == FolderState()
    cache.save_state("INBOX", FolderState(7, 30))
    assert cache.state("INBOX") == FolderState(7, 30)


def test_sqlite_reloads(tmp_path):
    path = tmp_path / "c.sqlite3"
    first = SqliteMessageCache(path)
    first.put(msg("INBOX", 3, flags={"\\Seen"}))
    first.save_state("INBOX", FolderState(5, 9))
    first.close()
    second = SqliteMessageCache(path)
    assert second.get("INBOX", 3) == msg("INBOX", 3, flags={"\\Seen"})
    assert second.state("INBOX") == FolderState(5, 9)
    second.close()


def test_message_id_helpers():
    assert message_id_of(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody") == "<a@b>"
    assert message_id_of(b"Subject: x\r\n\r\nbody") is None
    assert search_quoted("a@b") == search_quoted("<a@b>") == '"<a@b>"'
