"""The lab's web server: webmail (static and live views), the lab console and the HTTP API, in one aiohttp app.

Start one with the lab (`Lab(web=True)`, the default); `lab.web.url`, `lab.web.token` and `lab.web.console_url`
say where it is. See docs/web.md.
"""

from recall_lab.harness.web.server import WebError, WebServer

__all__ = ["WebError", "WebServer"]
