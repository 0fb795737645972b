"""Checks that Playwright for Python drives Debian's chromium the way the web tests do; one line on failure.

Why a check of its own: `pip install playwright` succeeds without any browser, and `apt-get install chromium`
succeeds even where the browser cannot start; only launching it, loading a page and running its script proves
the web tests can run. Usage: .venv/bin/python scripts/check-browser.py  (exit 0 and no output when it works).
"""

from __future__ import annotations

import sys

CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        print(f"check-browser: Playwright for Python is not installed ({exc}); pip install '.[test]'",
              file=sys.stderr)
        return 1
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.set_content("<p id=out></p><script>document.getElementById('out').textContent='ran'</script>")
                text = page.inner_text("#out")
            finally:
                browser.close()
    except Exception as exc:  # noqa: BLE001 - whatever stops the browser, one line says so
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"check-browser: Playwright cannot drive {CHROMIUM}: {first}", file=sys.stderr)
        return 1
    if text != "ran":
        print(f"check-browser: {CHROMIUM} loaded the page but did not run its script", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
