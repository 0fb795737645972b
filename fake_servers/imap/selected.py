"""What one session's client knows of its selected mailbox, and the changes it has not been told yet.

Why per session: RFC 3501 message sequence numbers are a contract between the server and ONE client. Other
sessions, SMTP delivery or a recall change the store at any moment; this view keeps the numbers the client
knows until the session may tell it (EXISTS at any time, EXPUNGE never during FETCH/STORE/SEARCH).
"""

from __future__ import annotations

import bisect

from ..store.base import (
    SYSTEM_FLAGS,
    FlagsChanged,
    MessageAppended,
    MessageRecord,
    MessagesExpunged,
)
from .seqset import compress

#: Added to the store's MODSEQ values on the wire: the store counts from 0 for an empty mailbox, while RFC 7162
#: mod-sequences are positive (0 means NOMODSEQ) and must grow with the first append.
MODSEQ_SHIFT = 1

#: Distinct (flags, recent) texts kept per selected mailbox before the cache starts over.
_FLAGS_TEXT_CACHE = 1024

_SYSTEM_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class SelectedMailbox:
    def __init__(self, user: str, name: str, readonly: bool, uidvalidity: int, records: list[MessageRecord],
                 recent: set[int], highestmodseq: int) -> None:
        self.user = user
        self.name = name
        self.readonly = readonly
        self.uidvalidity = uidvalidity
        self.uids: list[int] = [r.uid for r in records]
        self.records: dict[int, MessageRecord] = {r.uid: r for r in records}
        self.recent = recent
        #: False for an IMAP4rev2 session (RFC 9051 has no RECENT response; rev2.py)
        self.report_recent = True
        self._highestmodseq = highestmodseq
        self.keywords: set[str] = set()
        for r in records:
            self._note_keywords(r)
        # True while a keyword is known that the client has not been told of in `* FLAGS` (SELECT tells all)
        self.keywords_pending = False
        self.pending_new: list[MessageRecord] = []
        self.pending_flags: dict[int, None] = {}
        self.pending_expunge: set[int] = set()
        self.gone: set[int] = set()  # expunged in the store (announced or not)
        # Changes by others that the client asked not to hear of (NOTIFY without SELECTED: `on_event`'s `hold`),
        # kept out of the view until `release`; the lowest MODSEQ among them bounds what HIGHESTMODSEQ may say.
        self.held_new: list[MessageRecord] = []
        self.held_flags: dict[int, None] = {}
        self.held_expunge: set[int] = set()
        self._held_floor: int | None = None
        self._flags_text: dict[tuple[frozenset[str], bool], bytes] = {}

    # -- lookups ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def flags_of(self, uid: int) -> list[str]:
        """System flags, then \\Recent, then keywords (the order Dovecot writes)."""
        return _ordered(self.records[uid].flags, uid in self.recent)

    def flags_item(self, uid: int, rec: MessageRecord) -> bytes:
        """`FLAGS (...)` of a message as written in FETCH responses.

        Why cached by (flags, recent) and not per message: a mailbox has few distinct flag sets, so FETCH 1:*
        (FLAGS) of 10,000 messages sorts and encodes a handful of them instead of 10,000.
        """
        key = (rec.flags, uid in self.recent)
        text = self._flags_text.get(key)
        if text is None:
            if len(self._flags_text) >= _FLAGS_TEXT_CACHE:
                self._flags_text.clear()
            text = self._flags_text[key] = b"FLAGS (%s)" % " ".join(_ordered(*key)).encode()
        return text

    def flag_atoms(self) -> str:
        flags = list(_SYSTEM_ORDER) + sorted(self.keywords)
        return " ".join(flags)

    @property
    def highestmodseq(self) -> int:
        """The highest MODSEQ the client may be told: below the first held change, so that a client that
        resynchronises later (CONDSTORE, QRESYNC) still asks for what it was not told."""
        floor = self._held_floor
        return self._highestmodseq if floor is None else min(self._highestmodseq, floor - 1)

    @highestmodseq.setter
    def highestmodseq(self, value: int) -> None:
        self._highestmodseq = value

    # -- store events -------------------------------------------------------------------------------------
    def on_event(self, event, own: bool, hold: frozenset[str] = frozenset()) -> bool:
        """Record a store event on this mailbox; returns True when the change was held back.

        `hold`: the NOTIFY message events ("MessageNew", "MessageExpunge", "FlagChange") the client does not
        want for the selected mailbox (RFC 5465 3.1, NOTIFY without SELECTED). Such a change is kept out of the
        view, so the numbers the client knows stay valid, until `release`. The session's own expunges are never
        held (they answer its command); a held flag change still updates the record (a FETCH the client asks
        for shows the current flags), only the unsolicited FETCH waits."""
        if isinstance(event, MessageAppended):
            self._highestmodseq = max(self._highestmodseq, event.record.modseq)
            if "MessageNew" in hold:
                self.held_new.append(event.record)
                self._hold(event.record.modseq)
                return True
            self.pending_new.append(event.record)
        elif isinstance(event, FlagsChanged):
            rec = event.record
            self._highestmodseq = max(self._highestmodseq, rec.modseq)
            if rec.uid in self.records and rec.uid not in self.gone:
                self.records[rec.uid] = rec
                self._note_keywords(rec)
                if own:
                    return False
                if "FlagChange" in hold:
                    self.held_flags[rec.uid] = None
                    self._hold(rec.modseq)
                    return True
                self.pending_flags[rec.uid] = None
            else:
                for new in (self.pending_new, self.held_new):
                    for i, pending in enumerate(new):
                        if pending.uid == rec.uid:
                            new[i] = rec
                            return new is self.held_new
        elif isinstance(event, MessagesExpunged):
            self._highestmodseq = max(self._highestmodseq, event.modseq)
            gone = set(event.uids)
            self.pending_new = [r for r in self.pending_new if r.uid not in gone]
            if self.held_new:
                self.held_new = [r for r in self.held_new if r.uid not in gone]
            held = not own and "MessageExpunge" in hold
            into = self.held_expunge if held else self.pending_expunge
            for uid in event.uids:
                if uid in self.records:
                    self.gone.add(uid)
                    into.add(uid)
                    self.pending_flags.pop(uid, None)
                    self.held_flags.pop(uid, None)
            if held:
                self._hold(event.modseq)
                return True
        return False

    def _hold(self, modseq: int) -> None:
        if self._held_floor is None or modseq < self._held_floor:
            self._held_floor = modseq

    def release(self) -> list[int]:
        """The held changes become owed (the next flush tells them, in the usual order). Returns the UIDs of
        the messages that arrived or whose flags changed meanwhile (for the search contexts)."""
        touched = [r.uid for r in self.held_new] + list(self.held_flags)
        if self.held_new:
            self.pending_new = sorted(self.pending_new + self.held_new, key=lambda r: r.uid)
            self.held_new = []
        for uid in self.held_flags:
            self.pending_flags[uid] = None
        self.held_flags.clear()
        self.pending_expunge |= self.held_expunge
        self.held_expunge.clear()
        self._held_floor = None
        return touched

    def note_record(self, rec: MessageRecord) -> None:
        """A message's current record, as a command of this session learnt it (e.g. STORE's result)."""
        if rec.uid in self.records and rec.uid not in self.gone:
            self.records[rec.uid] = rec
            self._note_keywords(rec)

    def flush_keywords(self, out: bytearray) -> None:
        """Announce new keywords (FLAGS, then PERMANENTFLAGS) before any FETCH that shows one.

        Why the writers of FETCH lines call this before each line, not once per command: a change by another
        session can land between two lines of one response (a FETCH that stores \\Seen, a response written in
        chunks), and a client must never see a keyword it was not told of (RFC 3501 7.2.6). Cheap: one flag.
        """
        if not self.keywords_pending:
            return
        self.keywords_pending = False
        atoms = self.flag_atoms().encode()
        out += b"* FLAGS (%s)\r\n" % atoms
        if self.readonly:
            out += b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n"
        else:
            out += b"* OK [PERMANENTFLAGS (%s \\*)] Flags permitted.\r\n" % atoms

    def _note_keywords(self, rec: MessageRecord) -> None:
        keywords = self.keywords
        for f in rec.flags:
            if f not in keywords and f not in SYSTEM_FLAGS:
                keywords.add(f)
                self.keywords_pending = True

    # -- telling the client ---------------------------------------------------------------------------------
    def flush(self, out: bytearray, allow_expunge: bool, qresync: bool, condstore: bool,
              claim_recent=None, before_expunge=None, with_uid: bool = False) -> None:
        """Append the untagged responses the client is owed; expunges only when `allow_expunge`.

        `with_uid`: every flag update carries UID (IMAP4rev2, RFC 9051 7.5.2: an unsolicited FETCH includes
        UID), as it always does with QRESYNC (RFC 7162 3.2.4).

        `before_expunge(uid, seq) -> bytes`: lines to write just before a message's EXPUNGE (or before the
        VANISHED line), numbered as the message is at that moment (search contexts' REMOVEFROM, esearch.py)."""
        if allow_expunge and self.pending_expunge:
            recent_before = len(self.recent)
            gone = sorted(self.pending_expunge)
            if qresync:
                if before_expunge is not None:
                    for uid in gone:
                        out += before_expunge(uid, bisect.bisect_left(self.uids, uid) + 1)
                out += b"* VANISHED %s\r\n" % compress(gone).encode()
            # One pass over the list, not one `del` per message: a large expunge (a purge, a folder emptied)
            # stays O(n + k log n). Ascending order; each number counts the expunges announced before it.
            for j, uid in enumerate(gone):
                if not qresync:
                    seq = bisect.bisect_left(self.uids, uid) - j + 1
                    if before_expunge is not None:
                        out += before_expunge(uid, seq)
                    out += b"* %d EXPUNGE\r\n" % seq
                del self.records[uid]
                self.recent.discard(uid)
            dropped = set(gone)
            self.uids = [u for u in self.uids if u not in dropped]
            self.pending_expunge.clear()
            self.gone.difference_update(gone)
            if len(self.recent) != recent_before and not self.pending_new and self.report_recent:
                out += b"* %d RECENT\r\n" % len(self.recent)
        if self.pending_new:
            new = self.pending_new
            self.pending_new = []
            if claim_recent is not None:
                self.recent |= claim_recent([r.uid for r in new])
            for r in new:
                if self.uids and r.uid <= self.uids[-1]:
                    continue
                self.uids.append(r.uid)
                self.records[r.uid] = r
                self._note_keywords(r)
            out += b"* %d EXISTS\r\n" % len(self.uids)
            if self.report_recent:
                out += b"* %d RECENT\r\n" % len(self.recent)
        self.flush_keywords(out)
        if self.pending_flags:
            for uid in self.pending_flags:
                seq = self.seq_of(uid)
                if seq is None or uid in self.gone:
                    continue
                rec = self.records[uid]
                flags = self.flags_item(uid, rec)
                uid_item = b"UID %d " % uid if qresync or with_uid else b""
                if condstore:
                    out += b"* %d FETCH (%b%b MODSEQ (%d))\r\n" % (seq, uid_item, flags, rec.modseq + MODSEQ_SHIFT)
                else:
                    out += b"* %d FETCH (%b%b)\r\n" % (seq, uid_item, flags)
            self.pending_flags.clear()


def _ordered(flags: frozenset[str], recent: bool) -> list[str]:
    ordered = sorted(flags, key=_flag_key)
    if recent:
        i = 0
        while i < len(ordered) and ordered[i] in SYSTEM_FLAGS:
            i += 1
        ordered.insert(i, "\\Recent")
    return ordered


def _flag_key(flag: str) -> tuple[int, str]:
    try:
        return (_SYSTEM_ORDER.index(flag), flag)
    except ValueError:
        return (len(_SYSTEM_ORDER), flag)
