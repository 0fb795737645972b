"""The image's entry point: `recall-lab serve` with the container's defaults, the user's arguments after them.

Why a script and not ENTRYPOINT + CMD: Docker replaces the whole CMD with whatever follows the image name, so
`docker run recall-lab --config /data/lab.toml` used to drop `--host 0.0.0.0 --port-base 10000` and leave a lab
listening on the container's loopback, unreachable. Here the defaults always come first and the user's arguments
are appended: for an option given twice the last one wins, so a user's `--store maildir:/data` still replaces the
default `--store memory`.

The endpoints JSON names a host a client can use (`--advertise-host`, default 127.0.0.1, where the compose file
publishes the ports), not 0.0.0.0. The web server needs a token on a non-loopback address: with
RECALL_LAB_WEB_TOKEN set it listens on port 10080, else it is left out and the log says how to turn it on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

DEFAULTS = ["--host", "0.0.0.0", "--port-base", "10000", "--json", "--store", "memory",
            "--advertise-host", "127.0.0.1"]
WEB_PORT = "10080"


def build_argv(user_args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The full `recall-lab serve` command line for these user arguments and this environment."""
    argv = ["recall-lab", "serve", *DEFAULTS]
    wants_web_flags = any(a == "--no-web" or a.startswith("--web-") for a in user_args)
    if not wants_web_flags:
        argv += ["--web-port", WEB_PORT] if env.get("RECALL_LAB_WEB_TOKEN") else ["--no-web"]
    return argv + list(user_args)


def main() -> None:
    argv = build_argv(sys.argv[1:], os.environ)
    if "--no-web" in argv and "--no-web" not in sys.argv[1:]:
        print("recall-lab (docker): the web server is off; set RECALL_LAB_WEB_TOKEN (16+ characters) and publish "
              f"port {WEB_PORT} to turn it on", file=sys.stderr)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
