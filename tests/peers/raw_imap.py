"""A deliberately dumb IMAP client over a raw socket: it sends exactly the bytes of a command script and
records every response line, literals included. The differential test needs this because real client
libraries normalise, retry or refuse the odd and bad commands that the comparison is about.
"""

from __future__ import annotations

import re
import socket
import time

_LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}\r\n$")
_LITERAL_START = re.compile(rb"\{(\d+)(\+?)\}\r\n")


class ImapConnectionClosed(Exception):
    pass


class RawImap:
    """One connection. `command()` sends one tagged command (with its literals) and returns the responses."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self._buffer = b""
        self.greeting = self.read_response()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # --- reading --------------------------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no response from the server")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ImapConnectionClosed("server closed the connection")
        self._buffer += chunk

    def read_response(self, timeout: float | None = None) -> bytes:
        """One response: a line, with any literals it announces and the line parts after them, CRLF stripped."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        parts = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._fill(deadline)
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            line += b"\r\n"
            match = _LITERAL_AT_END.search(line)
            if not match:
                return parts + line[:-2]
            size = int(match.group(1))
            while len(self._buffer) < size:
                self._fill(deadline)
            parts += line + self._buffer[:size]
            self._buffer = self._buffer[size:]

    # --- writing --------------------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, tag: str, text: bytes) -> list[bytes]:
        """Send `tag text` (text may hold literals: `{n}\\r\\n` + n bytes), return the responses up to the
        tagged one. A synchronising literal is only sent after the server's `+`; if the server answers with
        the tagged response instead, the rest of the command is not sent."""
        responses: list[bytes] = []
        data = tag.encode() + b" " + text + b"\r\n"
        while True:
            match = _LITERAL_START.search(data)
            if match is None:
                self.send_raw(data)
                break
            head, size, plus = data[: match.end()], int(match.group(1)), match.group(2)
            self.send_raw(head)
            if not plus:
                while True:
                    response = self.read_response()
                    responses.append(response)
                    if response.startswith(b"+"):
                        break
                    if response.startswith(tag.encode() + b" "):
                        return responses
            self.send_raw(data[match.end(): match.end() + size])
            data = data[match.end() + size:]
        return responses + self.read_until_tagged(tag)

    def read_until_tagged(self, tag: str) -> list[bytes]:
        responses = []
        while True:
            response = self.read_response()
            responses.append(response)
            if response.startswith(tag.encode() + b" "):
                return responses
