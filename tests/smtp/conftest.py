"""Fixtures for the SMTP tests: a running default lab with short relay retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from recall_lab.harness.config import default_config
from recall_lab.harness.lab import Lab


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    cfg = default_config()
    cfg.retry_delays = (0.02, 0.02)
    async with Lab(cfg) as running:
        yield running
