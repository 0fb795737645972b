"""The verdict rule, checked over every combination of its inputs."""

from __future__ import annotations

import itertools

import pytest

from recall_lab.harness.clients.outcome import (
    ClientCopy,
    ClientVerdict,
    RecipientOutcome,
    judge,
    server_copy_present,
)


def expected(external, server, desktop, web, read, preview, preview_counts) -> ClientVerdict:
    if external:
        return ClientVerdict.IMPOSSIBLE
    if server:
        return ClientVerdict.FAILED
    if desktop or web or read or (preview and preview_counts):
        return ClientVerdict.PARTIAL
    return ClientVerdict.RECALLED


@pytest.mark.parametrize("combo", list(itertools.product([False, True], repeat=7)))
def test_every_combination(combo):
    external, server, desktop, web, read, preview, preview_counts = combo
    outcome = RecipientOutcome(
        recipient="bob@corp.example", server_copy=server,
        clients=(ClientCopy("desktop", "desktop", desktop), ClientCopy("web", "web", web)),
        read_before_recall=read, preview_seen=preview, external=external)
    verdict = judge(outcome, preview_counts_as_read=preview_counts)
    assert verdict is expected(*combo)
    assert outcome.verdict(preview_counts) is verdict
    assert outcome.explain(preview_counts).startswith(f"bob@corp.example: {verdict.value}")


def test_no_clients_at_all():
    assert judge(RecipientOutcome("x@y", server_copy=False)) is ClientVerdict.RECALLED
    assert ClientVerdict.RECALLED.success and not ClientVerdict.PARTIAL.success


def test_explain_names_the_client_that_still_shows_it():
    outcome = RecipientOutcome("bob@corp.example", False, (ClientCopy("bob-web", "web", True),))
    assert "still shown by bob-web" in outcome.explain()


def test_server_copy_present_uses_the_store_api():
    class Store:
        def find_by_message_id(self, user, mid):
            return ["somewhere"] if mid == "<a@b>" else []

    assert server_copy_present(Store(), "bob@corp.example", "<a@b>")
    assert not server_copy_present(Store(), "bob@corp.example", "<c@d>")
