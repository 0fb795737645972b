"""Replaces the resolver entry points of `socket` with ones that report every name lookup.

Why: the lab must never resolve the machine's own name (or any name): on a host whose name is not in
/etc/hosts each such lookup is a DNS query that can take seconds, and the lab's speed then depends on the
network. The tests make each lookup fail, and the demo benchmark makes it slow, to prove the lab makes none.

`on_lookup(description)` is called for each lookup; it may raise (the lookup fails) or return (the real
function then answers, after whatever delay `on_lookup` spent). Resolving a numeric address is no lookup and
passes through; `getfqdn` and `gethostbyaddr` always ask the resolver, so they are always reported.
"""

from __future__ import annotations

import ipaddress
import socket
import traceback
from collections.abc import Callable
from typing import Any

#: Functions that ask the resolver whatever their argument.
ALWAYS = ("getfqdn", "gethostbyaddr")
#: Functions that ask the resolver unless given a numeric address (or None: the wildcard address).
BY_NAME = ("gethostbyname", "gethostbyname_ex", "getaddrinfo")


def is_numeric(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    return True


def caller() -> str:
    """Where the lookup came from: the innermost frame outside this module and the socket module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.endswith(("own_name_guard.py", "socket.py")):
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def install(setattr_: Callable[[Any, str, Any], None], on_lookup: Callable[[str], None]) -> None:
    """Patch `socket` through `setattr_` (pytest's monkeypatch.setattr, or plain setattr in a subprocess)."""

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            host = args[0] if args else kwargs.get("host", kwargs.get("name"))
            if name in ALWAYS or not is_numeric(host):
                shown = ", ".join(repr(a) for a in args[:2])
                on_lookup(f"socket.{name}({shown}) from {caller()}")
            return real(*args, **kwargs)

        guarded.__name__ = name
        return guarded

    for name in (*ALWAYS, *BY_NAME):
        setattr_(socket, name, wrap(name, getattr(socket, name)))
