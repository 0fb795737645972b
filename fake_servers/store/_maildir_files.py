"""The files of a Dovecot Maildir++ account: names, flags in names, and Dovecot's small metadata files.

Why its own module: these formats are Dovecot's, not ours; keeping their reading and writing in one place
(with no store logic) makes it easy to check them against Dovecot and to see what a Dovecot admin would see.

Layout of one user (home = DIR/<user>/, `mail_location = maildir:DIR/%u`, LAYOUT=maildir++):

    DIR/alice@corp.example/            INBOX itself: cur/ new/ tmp/ dovecot-uidlist dovecot-keywords
    DIR/alice@corp.example/.Sent/      mailbox "Sent" (a `maildirfolder` file marks a folder)
    DIR/alice@corp.example/.a.b/       mailbox "a/b" (names are modified UTF-7, "." separates levels)
    DIR/alice@corp.example/subscriptions       Dovecot's v2 subscriptions file
    DIR/alice@corp.example/recall-lab-account.json   ours: retired UIDNEXTs, last UIDVALIDITY
    <mailbox dir>/recall-lab-state.json + recall-lab-state.log   ours: MODSEQs, Message-ID cache

Our files never start with "." (Dovecot would take a dot-directory for a folder) nor with "dovecot".
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from pathlib import Path

from imapclient import imap_utf7

from recall_lab.fake_servers.store.base import SEPARATOR, StoreError

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
SUBSCRIPTIONS = "subscriptions"
FOLDER_MARKER = "maildirfolder"
STATE = "recall-lab-state.json"
JOURNAL = "recall-lab-state.log"
ACCOUNT = "recall-lab-account.json"
TRASH_PREFIX = "recall-lab-deleting-"
INFO = ":2,"

#: Maildir info letters of the system flags (letters must be written in ASCII order).
FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}
MAX_KEYWORDS = 26  # a..z

_counter = itertools.count(1)
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


# -- atomic writes ---------------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes, mtime: int | None = None) -> None:
    """Write to a temporary name in the same directory, then rename: readers see the old or the new file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{next(_counter)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


# -- mailbox names <-> directories ------------------------------------------------------------------------
def folder_dir_name(name: str) -> str:
    """Mailbox name -> Maildir++ directory name ("a/b" -> ".a.b", modified UTF-7)."""
    parts = name.split(SEPARATOR)
    for part in parts:
        if "." in part:
            raise StoreError(f"Mailbox names may not contain '.' in the Maildir store: {name}")
    return "." + ".".join(imap_utf7.encode(part).decode("ascii") for part in parts)


def folder_name(dir_name: str) -> str | None:
    """Maildir++ directory name -> mailbox name, or None if the entry is not a folder of ours to show."""
    if not dir_name.startswith(".") or dir_name in (".", ".."):
        return None
    raw = dir_name[1:]
    if not raw or raw.startswith("DOVECOT-TRASHED") or any(part == "" for part in raw.split(".")):
        return None
    try:
        return SEPARATOR.join(imap_utf7.decode(part.encode("ascii")) for part in raw.split("."))
    except (UnicodeError, ValueError):
        return None


# -- message file names ------------------------------------------------------------------------------------
def new_base_name(size: int, vsize: int) -> str:
    """A unique Maildir base name with Dovecot's S= (file size) and W= (size with CRLF line ends)."""
    now = time.time()
    secs = int(now)
    usecs = int((now - secs) * 1_000_000)
    return f"{secs}.M{usecs}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size},W={vsize}"


def virtual_size(raw: bytes) -> int:
    """Size with every bare LF counted as CRLF: what Dovecot reports as RFC822.SIZE."""
    return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")


def base_of(filename: str) -> str:
    """The part of a Maildir file name that never changes (flags come after the ':')."""
    return filename.split(":", 1)[0]


def size_from_name(filename: str) -> int | None:
    for field in base_of(filename).split(",")[1:]:
        if field.startswith("S="):
            try:
                return int(field[2:])
            except ValueError:
                return None
    return None


def info_letters(filename: str) -> str:
    _, sep, letters = filename.partition(INFO)
    return letters if sep else ""


def flags_from_name(filename: str, keywords: list[str]) -> set[str]:
    """Flags spelled by a file name's ":2," info, keyword letters resolved through dovecot-keywords."""
    flags: set[str] = set()
    for letter in info_letters(filename):
        if letter in LETTER_FLAGS:
            flags.add(LETTER_FLAGS[letter])
        elif "a" <= letter <= "z":
            idx = ord(letter) - ord("a")
            if idx < len(keywords) and keywords[idx]:
                flags.add(keywords[idx])
    return flags


def info_for(flags: frozenset[str] | set[str], keywords: list[str]) -> tuple[str, list[str]]:
    """(":2,<letters>" letters, keywords that have no letter); `keywords` must already hold every keyword
    that can get one (see `assign_keywords`)."""
    letters = [FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS]
    extra: list[str] = []
    for flag in flags:
        if flag in FLAG_LETTERS:
            continue
        try:
            idx = keywords.index(flag)
        except ValueError:
            extra.append(flag)
            continue
        letters.append(chr(ord("a") + idx))
    return "".join(sorted(letters)), sorted(extra)


def assign_keywords(flags: frozenset[str] | set[str], keywords: list[str]) -> bool:
    """Give letters to new keywords while any of the 26 is free; True if `keywords` grew."""
    grew = False
    for flag in sorted(flags):
        if flag.startswith("\\") or flag in keywords:
            continue
        if len(keywords) >= MAX_KEYWORDS:
            break
        keywords.append(flag)
        grew = True
    return grew


# -- dovecot-keywords ----------------------------------------------------------------------------------------
def read_keywords(folder: Path) -> list[str]:
    try:
        text = (folder / KEYWORDS).read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    slots: dict[int, str] = {}
    for line in text.splitlines():
        idx, _, name = line.partition(" ")
        if idx.isdigit() and name and int(idx) < MAX_KEYWORDS:
            slots[int(idx)] = name
    return [slots.get(i, "") for i in range(max(slots) + 1)] if slots else []


def write_keywords(folder: Path, keywords: list[str]) -> None:
    lines = "".join(f"{i} {name}\n" for i, name in enumerate(keywords) if name)
    write_atomic(folder / KEYWORDS, lines.encode("utf-8"))


# -- dovecot-uidlist (version 3) -----------------------------------------------------------------------------
def new_guid() -> str:
    return uuid.uuid4().hex


def uidlist_header(uidvalidity: int, next_uid: int, guid: str) -> str:
    return f"3 V{uidvalidity} N{next_uid} G{guid}\n"


def uidlist_line(uid: int, filename: str) -> str:
    return f"{uid} :{filename}\n"


def read_uidlist(folder: Path) -> tuple[int, int, str, dict[int, str]] | None:
    """(UIDVALIDITY, next UID, GUID, {uid: base name}) or None when missing/unreadable.

    Lines are "<uid> [<key><value> ...] :<filename>"; Dovecot matches files by base name, so only the base
    is kept. Versions other than 3 (Courier's 1) are read too: "1 <uidvalidity> <nextuid>".
    """
    try:
        text = (folder / UIDLIST).read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    lines = text.split("\n")
    header = lines[0].split()
    if not header or not header[0].isdigit():
        return None
    version = int(header[0])
    uidvalidity = next_uid = 0
    guid = ""
    if version == 3:
        for field in header[1:]:
            key, value = field[:1], field[1:]
            if key == "V" and value.isdigit():
                uidvalidity = int(value)
            elif key == "N" and value.isdigit():
                next_uid = int(value)
            elif key == "G":
                guid = value
    elif version == 1 and len(header) >= 3 and header[1].isdigit() and header[2].isdigit():
        uidvalidity, next_uid = int(header[1]), int(header[2])
    else:
        return None
    entries: dict[int, str] = {}
    for line in lines[1:]:
        if not line:
            continue  # a torn last line of an append is ignored; the file is still there
        uid_text, _, rest = line.partition(" ")
        if not uid_text.isdigit():
            continue
        if version == 3:
            filename = None
            for pos, token in enumerate(rest.split(" ")):
                if token.startswith(":"):
                    filename = " ".join(rest.split(" ")[pos:])[1:]
                    break
            if not filename:
                continue
        else:
            filename = rest.strip()
        entries[int(uid_text)] = base_of(filename)
    if entries:
        next_uid = max(next_uid, max(entries) + 1)
    if uidvalidity == 0 or next_uid == 0:
        return None
    return uidvalidity, next_uid, guid, entries


def write_uidlist(folder: Path, uidvalidity: int, next_uid: int, guid: str, entries: dict[int, str]) -> None:
    body = [uidlist_header(uidvalidity, next_uid, guid)]
    body.extend(uidlist_line(uid, name) for uid, name in sorted(entries.items()))
    write_atomic(folder / UIDLIST, "".join(body).encode("utf-8"))


def append_uidlist(folder: Path, uid: int, filename: str) -> None:
    """Dovecot appends new lines without rewriting; readers take max(header N, last UID + 1) as next UID."""
    with open(folder / UIDLIST, "a", encoding="utf-8") as fh:
        fh.write(uidlist_line(uid, filename))


# -- subscriptions (Dovecot's v2 format: header "V\t2\n\n", levels separated by TAB) ---------------------------
_TAB_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_TAB_UNESCAPES = {v[1]: k for k, v in _TAB_ESCAPES.items()}


def _tab_escape(text: str) -> str:
    return "".join(_TAB_ESCAPES.get(ch, ch) for ch in text)


def _tab_unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\x01":
            out.append(_TAB_UNESCAPES.get(next(chars, ""), ""))
        else:
            out.append(ch)
    return "".join(out)


def read_subscriptions(root: Path) -> list[str]:
    try:
        text = (root / SUBSCRIPTIONS).read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    if text.startswith("V\t2\n\n"):
        return [SEPARATOR.join(_tab_unescape(p) for p in line.split("\t"))
                for line in text[5:].split("\n") if line]
    return [line for line in text.split("\n") if line]


def write_subscriptions(root: Path, names: list[str]) -> None:
    body = "V\t2\n\n" + "".join("\t".join(_tab_escape(p) for p in name.split(SEPARATOR)) + "\n"
                                for name in names)
    write_atomic(root / SUBSCRIPTIONS, body.encode("utf-8"))


# -- reading a message's header block from disk -----------------------------------------------------------
def read_header_block(path: Path, chunk: int = 16384) -> bytes:
    """Bytes up to the end of the header (or the whole file): enough to find the Message-ID cheaply."""
    data = b""
    with open(path, "rb") as fh:
        while True:
            part = fh.read(chunk)
            if not part:
                return data
            data += part
            if b"\n\n" in data or b"\r\n\r\n" in data:
                return data
