"""Benchmark of the lab's web server, side by side with a reference in the same run.

Measures, the way an outside client sees it (the lab in its own process: `recall-lab serve`; a real Chromium
driven by Playwright; plain sockets for the references):

1. Page load of the webmail's static view (bob's INBOX of --messages messages): navigation start to the load
   event in Chromium, against the very same bytes served as a file by Python's http.server (the reference: a
   page that costs nothing to make). Reported: p50 of each and the ratio.
2. Push latency of the live view: from the moment alice's client starts submitting the recall until the
   recalled message's row leaves the live page's DOM (a MutationObserver stamps it), against the same recall's
   EXPUNGE reaching an IMAP client in IDLE on bob's INBOX over a plain socket (the reference: the lab's own
   push, without the web). p50/p99 of each, and the ratio of medians. Also: from the recall's 250 to the DOM
   change (the cloud recall has deleted the original by then), and new-mail push (250 of the original to its
   row appearing: the page fetches the new list).
3. The web server's cost on SMTP throughput: messages/s from submission to INBOX with and without the web
   server (`Lab(web=False)`), alternating rounds (scripts/bench_smtp.py's client, in its own process).

    python scripts/bench_web.py [--messages 50] [--loads 30] [--recalls 40] [--rounds 3] [--smtp 2000] [--json]

Needs Playwright for Python and Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import re
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_smtp  # noqa: E402

from recall_lab.fake_servers.recall.format import RecallInstruction, build_recall_message  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ALICE, BOB = "alice@corp.example", "bob@corp.example"
TOKEN = "bench-web-token-0123456789"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the lab in its own process ----------------------------------------------------------------------------------
class ServedLab:
    def __init__(self) -> None:
        env = {**os.environ, "RECALL_LAB_WEB_TOKEN": TOKEN}
        self.proc = subprocess.Popen([sys.executable, "-c", "from recall_lab.harness.cli import main; main()",
                                      "serve", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"recall-lab serve failed: {self.proc.stderr.read()}")
        self.endpoints = json.loads(line)
        corp = self.endpoints["domains"]["corp.example"]
        self.submission = (corp["submission"]["host"], corp["submission"]["port"])
        self.imap = (corp["imap"]["host"], corp["imap"]["port"])
        self.web = self.endpoints["web"]["url"]
        self.password = corp["users"]

    def send(self, sender: str, rcpt: str, msg: EmailMessage) -> tuple[float, float]:
        """Submits; returns time.time() before connecting and right after the 250 to DATA."""
        start = time.time()
        with smtplib.SMTP(*self.submission, local_hostname="localhost") as smtp:
            smtp.login(sender, self.password[sender])
            smtp.send_message(msg, from_addr=sender, to_addrs=[rcpt])
            return start, time.time()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=20)


def message(n: int, subject: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"] = ALICE, BOB
    msg["Subject"] = subject or f"Quarterly figures, part {n}"
    msg["Message-ID"] = make_msgid(f"bench{n}", domain="corp.example")
    msg.set_content(f"Figures for part {n}.\n" + "A line of the report, as people write them.\n" * 20)
    return msg


def recall_of(original: EmailMessage) -> EmailMessage:
    return build_recall_message(RecallInstruction(original_message_id=original["Message-ID"],
                                                  original_subject=original["Subject"], sender=ALICE, to=(BOB,)))


# -- the IDLE reference ------------------------------------------------------------------------------------------
class IdleWatcher:
    """bob's INBOX in IDLE over a plain socket; stamps each EXPUNGE with time.time() when its line arrives."""

    def __init__(self, host: str, port: int, password: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.expunges: list[float] = []
        self.cond = threading.Condition()
        self._read_line()
        for tag, cmd in (("a", f'LOGIN "{BOB}" "{password}"'), ("b", "SELECT INBOX")):
            self.sock.sendall(f"{tag} {cmd}\r\n".encode())
            while not self._read_line().startswith(tag.encode() + b" "):
                pass
        self.sock.sendall(b"c IDLE\r\n")
        while not self._read_line().startswith(b"+"):
            pass
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read_line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise ConnectionError("IMAP connection closed")
        return line

    def _run(self) -> None:
        try:
            while True:
                line = self._read_line()
                if re.match(rb"\* \d+ EXPUNGE", line):
                    with self.cond:
                        self.expunges.append(time.time())
                        self.cond.notify_all()
        except (OSError, ConnectionError, ValueError):
            return

    def wait_count(self, n: int, timeout: float = 10.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.expunges) >= n, timeout):
                raise TimeoutError("no EXPUNGE reached the IDLE client")
            return self.expunges[n - 1]

    def close(self) -> None:
        try:
            self.sock.sendall(b"DONE\r\nz LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()


class NoCacheHandler(http.server.SimpleHTTPRequestHandler):
    """The reference page server: every load fetched again, as the webmail's pages are (no-store), silently."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def send_head(self):  # noqa: ANN201 - the base class's signature
        if "If-Modified-Since" in self.headers:
            del self.headers["If-Modified-Since"]  # no 304: the reference sends the bytes each time
        return super().send_head()


# -- the browser parts -------------------------------------------------------------------------------------------
OBSERVER = """() => {
  // a row that leaves the list by itself is a removal; rows inside a list fragment that replaces the old one are
  // new only when the old list did not have them (the page marks those "fresh")
  window.__changes = [];
  new MutationObserver(records => {
    const at = performance.timeOrigin + performance.now();
    for (const r of records) {
      for (const n of r.removedNodes) {
        if (n.nodeType === 1 && n.matches('li.msg')) window.__changes.push(['gone', n.dataset.messageId, at]);
      }
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        const rows = n.matches('li.msg') ? [n] : Array.from(n.querySelectorAll('li.msg.fresh'));
        for (const row of rows) window.__changes.push(['new', row.dataset.messageId, at]);
      }
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""


def login(page, base: str, view: str, password: str) -> None:  # noqa: ANN001 - Playwright's Page
    page.goto(f"{base}/mail/?view={view}")
    page.fill("input[name=address]", BOB)
    page.fill("input[name=password]", password)
    page.check(f"input[name=view][value={view}]")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_selector("#message-list")


def nav_ms(page) -> float:  # noqa: ANN001
    return page.evaluate("() => { const e = performance.getEntriesByType('navigation')[0];"
                         " return e.loadEventEnd - e.startTime; }")


def bench_pages(lab: ServedLab, args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    for n in range(args.messages):
        lab.send(ALICE, BOB, message(n))
    results: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            static = browser.new_context().new_page()
            login(static, lab.web, "static", lab.password[BOB])
            url = f"{lab.web}/mail/?folder=INBOX&view=static"
            static.goto(url)
            html = static.content()
            css = {}
            for href in static.eval_on_selector_all("link[rel=stylesheet]", "els => els.map(e => e.href)"):
                css[href] = static.request.get(href).body()
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                page_html = html
                for i, (href, body) in enumerate(css.items()):
                    name = f"s{i}.css"
                    (root / name).write_bytes(body)
                    page_html = page_html.replace(href.removeprefix(lab.web), name).replace(href, name)
                (root / "index.html").write_text(page_html, encoding="utf-8")
                handler = lambda *a, **kw: NoCacheHandler(*a, directory=tmp, **kw)  # noqa: E731
                ref_proc_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
                thread = threading.Thread(target=ref_proc_server.serve_forever, daemon=True)
                thread.start()
                ref_url = f"http://127.0.0.1:{ref_proc_server.server_address[1]}/index.html"
                ref = browser.new_context().new_page()
                lab_ms, ref_ms = [], []
                try:
                    for _ in range(args.loads):
                        static.goto(url)
                        lab_ms.append(nav_ms(static))
                        ref.goto(ref_url)
                        ref_ms.append(nav_ms(ref))
                finally:
                    ref_proc_server.shutdown()
            results["page_load_ms_p50"] = round(statistics.median(lab_ms), 2)
            results["page_load_reference_ms_p50"] = round(statistics.median(ref_ms), 2)
            results["page_load_ratio"] = round(statistics.median(lab_ms) / statistics.median(ref_ms), 2)
            results["page_bytes"] = len(html.encode())

            live = browser.new_context().new_page()
            login(live, lab.web, "live", lab.password[BOB])
            live.goto(f"{lab.web}/mail/?folder=INBOX&view=live")
            live.wait_for_selector("#message-list")
            live.evaluate(OBSERVER)
            watcher = IdleWatcher(*lab.imap, lab.password[BOB])
            dom_ms, idle_ms, new_ms, after_250 = [], [], [], []
            try:
                for n in range(args.recalls):
                    original = message(10_000 + n, f"Sent by mistake {n}")
                    mid = original["Message-ID"]
                    _, sent = lab.send(ALICE, BOB, original)
                    live.wait_for_function("mid => window.__changes.some(c => c[0] === 'new' && c[1] === mid)",
                                           arg=mid, timeout=10_000)
                    appeared = live.evaluate("mid => window.__changes.find(c => c[0] === 'new' && c[1] === mid)[2]",
                                             mid)
                    new_ms.append(appeared - sent * 1000)
                    started, accepted = lab.send(ALICE, BOB, recall_of(original))
                    live.wait_for_function("mid => window.__changes.some(c => c[0] === 'gone' && c[1] === mid)",
                                           arg=mid, timeout=10_000)
                    gone = live.evaluate("mid => window.__changes.find(c => c[0] === 'gone' && c[1] === mid)[2]",
                                         mid)
                    dom_ms.append(gone - started * 1000)
                    idle_ms.append((watcher.wait_count(n + 1) - started) * 1000)
                    after_250.append(gone - accepted * 1000)
            finally:
                watcher.close()
            results["push_recall_to_dom_ms_p50"] = round(statistics.median(dom_ms), 2)
            results["push_recall_to_dom_ms_p99"] = round(pct(dom_ms, 0.99), 2)
            results["push_recall_to_idle_expunge_ms_p50"] = round(statistics.median(idle_ms), 2)
            results["push_recall_to_idle_expunge_ms_p99"] = round(pct(idle_ms, 0.99), 2)
            results["push_ratio_dom_vs_idle_p50"] = round(statistics.median(dom_ms) / statistics.median(idle_ms), 2)
            results["push_after_the_recalls_250_to_dom_ms_p50"] = round(statistics.median(after_250), 2)
            results["push_new_mail_to_dom_ms_p50"] = round(statistics.median(new_ms), 2)
            results["push_new_mail_to_dom_ms_p99"] = round(pct(new_ms, 0.99), 2)
        finally:
            browser.close()
    return results


async def bench_smtp_cost(args: argparse.Namespace) -> dict:
    on, off = [], []
    for _ in range(args.rounds):
        off.append(await bench_smtp.bench_lab(args.smtp, 4, BOB, web=False))
        on.append(await bench_smtp.bench_lab(args.smtp, 4, BOB, web=True))
    med = statistics.median
    return {"smtp_msgs_per_s_without_web": round(med(r for r, _ in off)),
            "smtp_msgs_per_s_with_web": round(med(r for r, _ in on)),
            "smtp_ratio_with_vs_without_web": round(med(a[0] / b[0] for a, b in zip(on, off, strict=True)), 3),
            "smtp_cpu_us_per_msg_without_web": round(med(c for _, c in off), 1),
            "smtp_cpu_us_per_msg_with_web": round(med(c for _, c in on), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50, help="messages in bob's INBOX for the page loads")
    parser.add_argument("--loads", type=int, default=30, help="page loads of each kind")
    parser.add_argument("--recalls", type=int, default=40, help="recalls timed in the live view")
    parser.add_argument("--rounds", type=int, default=3, help="SMTP rounds with and without the web server")
    parser.add_argument("--smtp", type=int, default=2000, help="messages per SMTP round")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results: dict = {}
    lab = ServedLab()
    try:
        results.update(bench_pages(lab, args))
    finally:
        lab.close()
    results.update(asyncio.run(bench_smtp_cost(args)))
    results["params"] = {k: getattr(args, k) for k in ("messages", "loads", "recalls", "rounds", "smtp")}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:42} {value}")


if __name__ == "__main__":
    main()
