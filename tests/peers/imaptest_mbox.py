"""A deterministic mbox of varied messages for imaptest's stress mode (`mbox=FILE`).

Why generated and not a fixture file: imaptest appends these messages over and over and checks every FETCH
against its own parse of them, so the variety matters (plain, multipart, attachments, RFC 2047 words, nested
messages, odd headers), the bytes do not. A seed makes a run repeatable.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

_WORDS = ("alpha", "beta", "gamma", "delta", "recall", "quarterly", "report", "lunch", "budget", "meeting",
          "draft", "review", "ticket", "merge", "release", "notes", "follow-up", "invoice", "agenda", "plan")
_PEOPLE = ("Alice Example <alice@corp.example>", "bob@corp.example", '"Carol, C." <carol@corp.example>',
           "=?utf-8?q?D=C3=A9sir=C3=A9e?= <desiree@mail.example>", "erin@mail.example (Erin)",
           "team: alice@corp.example, bob@corp.example;", "<dave@mail.example>")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _headers(rng: random.Random, i: int) -> list[str]:
    subject = _sentence(rng, rng.randint(1, 6))
    kind = rng.random()
    if kind < 0.15:
        subject = "=?utf-8?b?" + base64.b64encode(f"Grüße {subject}".encode()).decode() + "?="
    elif kind < 0.3:
        subject = rng.choice(("Re: ", "Fwd: ", "[list] Re: ", "RE: [fwd: ")) + subject
    day = 1 + i % 28
    return [f"From: {rng.choice(_PEOPLE)}",
            f"To: {', '.join(rng.sample(_PEOPLE, rng.randint(1, 3)))}",
            *([f"Cc: {rng.choice(_PEOPLE)}"] if rng.random() < 0.3 else []),
            f"Subject: {subject}",
            f"Date: {['Mon', 'Tue', 'Wed', 'Thu', 'Fri'][i % 5]}, {day:02d} Mar 2026 "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00 {rng.choice(('+0000', '+0200', '-0500'))}",
            f"Message-ID: <stress-{i}@corp.example>",
            "MIME-Version: 1.0"]


def _body_lines(rng: random.Random) -> list[str]:
    return [_sentence(rng, rng.randint(3, 12)) for _ in range(rng.randint(1, 8))]


def message(rng: random.Random, i: int) -> list[str]:
    """One message as lines (without line ends)."""
    lines = _headers(rng, i)
    shape = i % 5
    if shape == 0:
        return lines + ["Content-Type: text/plain; charset=us-ascii", ""] + _body_lines(rng)
    if shape == 1:
        lines += [f'Content-Type: multipart/alternative; boundary="alt-{i}"', "", "preamble",
                  f"--alt-{i}", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "",
                  *_body_lines(rng), f"--alt-{i}", "Content-Type: text/html; charset=us-ascii", "",
                  "<p>" + _sentence(rng, 5) + "</p>", f"--alt-{i}--", "epilogue"]
        return lines
    if shape == 2:
        payload = base64.encodebytes(bytes(rng.randrange(256) for _ in range(rng.randint(50, 900))))
        lines += [f'Content-Type: multipart/mixed; boundary="mix-{i}"', "",
                  f"--mix-{i}", "Content-Type: text/plain", "", *_body_lines(rng),
                  f"--mix-{i}", 'Content-Type: application/octet-stream; name="data.bin"',
                  'Content-Disposition: attachment; filename="data.bin"', "Content-Transfer-Encoding: base64", "",
                  *payload.decode().splitlines(), f"--mix-{i}--"]
        return lines
    if shape == 3:
        lines += ["Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: quoted-printable",
                  "", "caf=E9 " + _sentence(rng, 4) + "=", "continued " + _sentence(rng, 3)]
        return lines
    inner = _headers(rng, i + 1000) + ["Content-Type: text/plain", ""] + _body_lines(rng)
    lines += [f'Content-Type: multipart/mixed; boundary="fwd-{i}"', "",
              f"--fwd-{i}", "Content-Type: text/plain", "", "forwarded below",
              f"--fwd-{i}", "Content-Type: message/rfc822", "", *inner, f"--fwd-{i}--"]
    return lines


def write_mbox(path: str | Path, count: int, seed: int = 1) -> Path:
    """Write `count` messages in mbox format (From_ lines, '>From ' quoting) to `path`."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(count):
        out.append(f"From sender@corp.example Mon Mar  2 10:{i % 60:02d}:00 2026")
        for line in message(rng, i):
            out.append(">" + line if line.startswith("From ") else line)
        out.append("")
    path = Path(path)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
