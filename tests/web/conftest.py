"""Fixtures for the web tests: a real Chromium driven by Playwright, one per test session (per xdist worker).

Why Playwright's async API, in the session's event loop: the sync API keeps its own loop marked as running in
the test thread for as long as the browser lives, which would break every asyncio test that runs after it in the
same worker. The browser tests therefore run in the session loop (`pytest.mark.asyncio(loop_scope="session")`,
and their own fixtures with `loop_scope="session"`).

The browser fixture skips, with the reason, when Playwright or /usr/bin/chromium is missing (never
`playwright install`: the system's Chromium is used). `pages` opens pages in fresh browser contexts (one context:
one browser profile with its own cookies) and, when the test fails, saves a screenshot of each into the test's
tmp_path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

CHROMIUM = Path("/usr/bin/chromium")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # read by `pages` to know whether the test failed
    return report


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the system's chromium is used)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Any, request: pytest.FixtureRequest,
                tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await pages()` -> a new page in a new browser context (`await pages(context)`: another tab of that
    context); screenshots of every page on failure."""
    contexts: list[Any] = []
    opened: list[Any] = []

    async def new_page(context: Any | None = None) -> Any:
        if context is None:
            context = await browser.new_context()
            contexts.append(context)
        page = await context.new_page()
        opened.append(page)
        return page

    yield new_page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for index, page in enumerate(opened):
            try:
                await page.screenshot(path=str(tmp_path / f"page-{index}.png"), full_page=True)
            except Exception as exc:  # noqa: BLE001 - a closed page: say so, keep the other screenshots
                (tmp_path / f"page-{index}.txt").write_text(f"no screenshot: {exc}\n")
        print(f"screenshots of the failed test's pages: {tmp_path}")
    for context in contexts:
        await context.close()
