"""Making a rename or a new file survive a crash: the directory entry is flushed too (fsync of the folder).

Why one home: the relay spool and the store's operation records both write a file, rename it into place and
then need the folder's entry on disk before they acknowledge anything; the store sits below the SMTP layer, so
the helper lives below both.
"""

from __future__ import annotations

import os
from pathlib import Path


def sync_dir(directory: Path | str) -> None:
    """fsync a directory; best effort (some filesystems refuse to open or sync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
