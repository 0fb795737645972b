"""Imported by Python at start-up when this folder is on PYTHONPATH: guards the process's name lookups.

OWN_NAME_SHIM=raise makes every lookup fail (OSError); OWN_NAME_SHIM=sleep:SECONDS makes each one take that
long first, as an unanswered DNS query does, then answer. Each lookup is appended to the file OWN_NAME_LOG
when that is set; OWN_NAME_ACTIVE names a file where each guarded process writes its pid, proving the shim was
loaded (a test that passes because its shim was never imported proves nothing). Used on `recall-lab` subprocesses by tests/lab/test_no_own_name_lookup.py and
scripts/bench_demo.py.
"""

import os
import time

from own_name_guard import install


def _on_lookup(description: str) -> None:
    log = os.environ.get("OWN_NAME_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {description}\n")
    mode = os.environ.get("OWN_NAME_SHIM", "raise")
    if mode.startswith("sleep:"):
        time.sleep(float(mode.partition(":")[2]))
        return
    raise OSError(f"name lookup refused by the test shim: {description}")


if os.environ.get("OWN_NAME_SHIM"):
    install(setattr, _on_lookup)
    if os.environ.get("OWN_NAME_ACTIVE"):
        with open(os.environ["OWN_NAME_ACTIVE"], "a", encoding="utf-8") as active:
            active.write(f"{os.getpid()}\n")
