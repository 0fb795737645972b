"""THREAD and UID THREAD (RFC 5256): the REFERENCES and ORDEREDSUBJECT algorithms.

Why REFERENCES links as Dovecot does: RFC 5256 leaves open what wins when the References of different
messages disagree, and clients (and imaptest's thread groups) expect Dovecot's answers. So, per message in
UID order: a message-id already held by an earlier message gets a node of its own (the first keeps the id);
consecutive References are linked parent -> child unless that would make a loop or the child already has a
different parent (the first link wins); the message's own node then takes its last reference as parent, and
a parent that other messages' References gave it and its own headers contradict is dropped (a message knows
its parent best). Without valid References, the first valid In-Reply-To id is the parent. Dummies (ids no
searched message has) are removed below the root and kept at the root only over two or more children; roots
are gathered by base subject (RFC 5256 step 5, with the base subject and reply marks of sort.py, compared
with i;ascii-casemap) and every level is ordered by sent date (sort.sent_time), ties by UID.

Why in steps: a thread over 10,000 messages reads every message's header and walks the tree; the command
runs as a generator (session.py), one message per step while reading and linking, then steps of at most
STEP_WORK units of tree work, so other clients are served in between. Why bounded: a message's References
count as at most MAX_REFERENCES ids (the first, which names the thread's start, and the last ones, its
nearest ancestors, as clients trim them), and the loop checks of one THREAD may visit at most MAX_WORK nodes
(a crafted mailbox could make them quadratic): beyond that the command gets NO [LIMIT]. Why no recursion:
threads nest as deep as a mailbox is long, far beyond Python's recursion limit, so every walk is a loop.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from ..store.base import NoSuchMessage
from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .search import Msg
from .selected import SelectedMailbox
from .sort import ascii_casemap, base_subject_info, sent_time
from .state import SessionCore

#: The algorithms THREAD accepts (announced as THREAD=<name>).
ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")

#: At most this many ids of one message's References count: the first and the last MAX_REFERENCES - 1.
MAX_REFERENCES = 100
#: Nodes the loop checks of one THREAD may visit in all (beyond: NO [LIMIT]).
MAX_WORK = 20_000_000
#: Units of tree work (nodes visited, sorted or written) per step.
STEP_WORK = 2048

_MSG_ID = re.compile(r"<([^>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")
_BLANK = re.compile(r"[ \t\r\n]+")

Steps = Iterator[None]


def message_ids(value: str) -> list[str]:
    """The valid msg-ids of a header value, in order, without angle brackets: an id needs an "@" with text
    on both sides; comments, blanks (folding) and the quotes around a quoted local part are dropped, and ids
    are then compared as written."""
    found = []
    for m in _MSG_ID.finditer(value):
        text = m.group(1)
        if "(" in text:
            text = _COMMENT.sub("", text)
        text = _BLANK.sub("", text)
        if text.startswith('"') and '"@' in text:
            local, _, domain = text[1:].partition('"@')
            text = f"{local}@{domain}"
        if "@" in text and text[0] != "@" and text[-1] != "@":
            found.append(text)
    return found


def trim_references(refs: list[str]) -> list[str]:
    """At most MAX_REFERENCES ids: the first (the thread's start) and the last ones (the nearest ancestors)."""
    if len(refs) <= MAX_REFERENCES:
        return refs
    return refs[:1] + refs[-(MAX_REFERENCES - 1):]


@dataclass(slots=True)
class ThreadHeaders:
    """What threading reads of one message."""

    number: int  # what the answer names it by: its sequence number or UID
    uid: int
    date: float  # RFC 5256 sent date (sort.sent_time)
    subject: str | None  # the first Subject, decoded; None without one
    message_id: str | None
    references: list[str]  # References (or the first In-Reply-To id), trimmed to MAX_REFERENCES


def read_headers(m: Msg, number: int, with_ids: bool) -> ThreadHeaders:
    """One searched message's threading headers (a message expunged meanwhile has none)."""
    try:
        view = m.view()
        subjects = view.header_values("Subject")
        date = sent_time(m)
        message_id: str | None = None
        refs: list[str] = []
        if with_ids:
            ids = message_ids(next(iter(view.header_values("Message-ID")), ""))
            message_id = ids[0] if ids else None
            refs = message_ids(next(iter(view.header_values("References")), ""))
            if not refs:
                refs = message_ids(next(iter(view.header_values("In-Reply-To")), ""))[:1]
            refs = trim_references(refs)
    except NoSuchMessage:
        internal = m.record.internaldate
        if internal.tzinfo is None:
            internal = internal.replace(tzinfo=UTC)
        return ThreadHeaders(number, m.uid, internal.timestamp(), None, None, [])
    return ThreadHeaders(number, m.uid, date, subjects[0] if subjects else None, message_id, refs)


class ThreadTree:
    """The answer's trees: node -> message (None: a dummy) and node -> children, roots in order."""

    def __init__(self) -> None:
        self.message: list[ThreadHeaders | None] = []
        self.children: dict[int, list[int]] = {}
        self.roots: list[int] = []

    def add(self, message: ThreadHeaders | None) -> int:
        self.message.append(message)
        return len(self.message) - 1

    def key(self, node: int) -> tuple[float, int]:
        """Sent date, then UID; a dummy sorts as its first child."""
        while (msg := self.message[node]) is None:
            node = self.children[node][0]
        return (msg.date, msg.uid)

    def render(self) -> Generator[None, None, bytes]:
        """`(1 2 (3 4)(5))(6)...`: RFC 5256 thread-list syntax, children in the order they are held."""
        out: list[str] = []
        todo = list(reversed(self.roots))  # nodes to open a list for; -1: close one
        work = 0
        while todo:
            node = todo.pop()
            if node < 0:
                out.append(")")
                continue
            out.append("(")
            first = True
            while True:
                work += 1
                msg = self.message[node]
                kids = self.children.get(node, ())
                if msg is not None:
                    out.append(str(msg.number) if first else f" {msg.number}")
                    first = False
                    if len(kids) == 1:
                        node = kids[0]  # a single child continues the same list
                        continue
                if kids and not first:
                    out.append(" ")
                todo.append(-1)
                todo.extend(reversed(kids))
                break
            if work >= STEP_WORK:
                work = 0
                yield
        return "".join(out).encode()


def ordered_subject(messages: list[ThreadHeaders]) -> Generator[None, None, ThreadTree]:
    """ORDEREDSUBJECT: messages sorted by base subject, then sent date; one thread per base subject, its first
    message the root and the others its children; threads ordered by their first message's date."""
    keyed = []
    for i, msg in enumerate(messages):
        base = base_subject_info(msg.subject)[0] if msg.subject is not None else ""
        keyed.append((ascii_casemap(base), msg.date, msg.uid, i))
    keyed.sort()
    yield
    tree = ThreadTree()
    for k, (subject, _date, _uid, i) in enumerate(keyed):
        node = tree.add(messages[i])
        if k and keyed[k - 1][0] == subject:
            tree.children.setdefault(tree.roots[-1], []).append(node)
        else:
            tree.roots.append(node)
    tree.roots.sort(key=tree.key)
    yield
    return tree


class _Root:
    """One thread at the root while subjects are gathered (RFC 5256 step 5)."""

    __slots__ = ("node", "dummy", "reply", "parent", "ignore")

    def __init__(self, node: int, dummy: bool) -> None:
        self.node = node
        self.dummy = dummy
        self.reply = False
        self.parent: _Root | None = None  # the root it is to be merged into
        self.ignore = False


class References:
    """THREAD=REFERENCES: `add` each searched message in UID order, then `finish`."""

    def __init__(self, max_work: int = MAX_WORK) -> None:
        self.ids: dict[str, int] = {}
        self.parent: list[int] = []  # -1: none
        self.message: list[ThreadHeaders | None] = []
        self.kids: list[int] = []  # how many nodes have this one as parent
        self.work = 0
        self.max_work = max_work

    def _node(self, message_id: str) -> int:
        node = self.ids.get(message_id)
        if node is None:
            node = self.ids[message_id] = self._new(None)
        return node

    def _new(self, message: ThreadHeaders | None) -> int:
        self.parent.append(-1)
        self.message.append(message)
        self.kids.append(0)
        return len(self.parent) - 1

    def _set_parent(self, child: int, parent: int) -> None:
        old = self.parent[child]
        if old >= 0:
            self.kids[old] -= 1
        self.parent[child] = parent
        if parent >= 0:
            self.kids[parent] += 1

    def _link(self, parent: int, child: int) -> None:
        """parent -> child, unless the child has another parent already (the first wins) or it would loop."""
        if self.parent[child] >= 0:
            return  # the same link, or a different one that stays
        if parent == child:
            return
        if self.kids[child]:  # a root with children: is it the parent's root?
            node, steps = parent, 0
            while node >= 0 and node != child:
                node = self.parent[node]
                steps += 1
            self.work += steps
            if self.work > self.max_work:
                raise CommandFailed("THREAD: these messages' references are too tangled to thread", "LIMIT")
            if node == child:
                return  # a loop
        self._set_parent(child, parent)

    def add(self, msg: ThreadHeaders) -> None:
        own = self.ids.get(msg.message_id) if msg.message_id is not None else None
        if own is not None and self.message[own] is None:
            self.message[own] = msg
        else:
            own = self._new(msg)  # no id, or a duplicate one: a node of its own
            if msg.message_id is not None and msg.message_id not in self.ids:
                self.ids[msg.message_id] = own
        parent = -1
        for ref in msg.references:
            node = self._node(ref)
            if parent >= 0:
                self._link(parent, node)
            parent = node
        if self.parent[own] not in (-1, parent):
            self._set_parent(own, -1)  # its own References say otherwise
        if parent >= 0:
            self._link(parent, own)

    def finish(self) -> Generator[None, None, ThreadTree]:
        """RFC 5256 steps 2 to 6 over the linked nodes."""
        tree = ThreadTree()
        for message in self.message:
            tree.add(message)
        message, parent = self.message, self.parent
        children = tree.children
        # (3) below the root, a message hangs from its nearest real ancestor, or from the dummy at the root
        up: dict[int, int] = {}  # dummy below the root -> where its children go
        roots: list[int] = []
        work = 0
        for node in range(len(parent)):
            p = parent[node]
            if p < 0:
                roots.append(node)
            elif message[node] is not None:
                path = []
                while message[p] is None and parent[p] >= 0 and p not in up:
                    path.append(p)
                    p = parent[p]
                target = up.get(p, p)
                for d in path:
                    up[d] = target
                children.setdefault(target, []).append(node)
                work += 1 + len(path)
            if work >= STEP_WORK:
                work = 0
                yield
        key = tree.key
        for kids in children.values():
            if len(kids) > 1:
                kids.sort(key=key)
                work += len(kids)
                if work >= STEP_WORK:
                    work = 0
                    yield
        # (2) the roots; a dummy without children goes, one with a single child gives way to it
        threads: list[_Root] = []
        for node in roots:
            if message[node] is not None:
                threads.append(_Root(node, False))
                continue
            kids = children.get(node)
            if not kids:
                continue
            threads.append(_Root(kids[0], False) if len(kids) == 1 else _Root(node, True))
        threads.sort(key=lambda t: key(t.node))
        yield
        if self._gather(tree, threads):
            threads = [t for t in threads if not t.ignore]
            threads.sort(key=lambda t: key(t.node))  # a dummy's first child may have changed
            yield
        tree.roots = [t.node for t in threads if not t.ignore]
        return tree

    @staticmethod
    def _gather(tree: ThreadTree, threads: list[_Root]) -> bool:
        """(5) Threads whose base subjects agree become one; True when any did."""
        table: dict[bytes, _Root] = {}
        for t in threads:
            first = tree.message[tree.children[t.node][0] if t.dummy else t.node]
            if first is None or first.subject is None:
                continue
            base, reply = base_subject_info(first.subject)
            if not base:
                continue
            subject = ascii_casemap(base)
            held = table.get(subject)
            if held is None:
                table[subject] = t
            elif not held.dummy and (t.dummy or (held.reply and not reply)):
                held.parent = t
                table[subject] = t
            else:
                t.parent = held
            t.reply = reply
        grown: set[int] = set()
        for t in list(threads):
            if t.parent is None or t.ignore:
                continue
            top = t.parent
            while top.parent is not None:
                top = top.parent
            children = tree.children
            if t.dummy:
                # both dummies: the children of both become siblings
                children.setdefault(top.node, []).extend(children.pop(t.node, []))
                grown.add(top.node)
                t.ignore = True
            elif top.dummy or (t.reply and not top.reply):
                children.setdefault(top.node, []).append(t.node)  # a sibling of the held one's children
                grown.add(top.node)
                t.ignore = True
            else:
                new = _Root(tree.add(None), True)  # a dummy over both
                children[new.node] = [top.node, t.node]
                top.parent = new
                top.ignore = t.ignore = True
                grown.add(new.node)
                threads.append(new)
        for node in grown:  # keep every level in date order
            tree.children[node].sort(key=tree.key)
        return bool(grown)


def _number(m: Msg, uid: bool) -> int:
    return m.uid if uid else m.seq


class ThreadCommands(SessionCore):
    """THREAD and UID THREAD (a mixin of ImapSession; `_sel` and `_matches` come from MessageCommands)."""

    if TYPE_CHECKING:  # what the mixin uses of MessageCommands
        def _sel(self) -> SelectedMailbox: ...

        def _matches(self, sel: SelectedMailbox, prog: Any) -> Generator[None, None, list[Msg]]: ...

    def cmd_thread(self, tag: str, lx: Lexer, uid: bool = False) -> Steps:
        sel = self._sel()
        lx.sp()
        algorithm = lx.atom("thread algorithm").upper()
        if algorithm not in ALGORITHMS:
            raise ParseError(f"Unknown thread algorithm {algorithm[:20]} (try {' or '.join(ALGORITHMS)})")
        lx.sp()
        prog = self._charset_and_criteria(lx, sel)  # message_commands.py: the tail SORT has too
        return self._thread_steps(tag, sel, prog, algorithm, uid)

    def _thread_steps(self, tag: str, sel: SelectedMailbox, prog, algorithm: str, uid: bool) -> Steps:
        hits = yield from self._matches(sel, prog)
        references = algorithm == "REFERENCES"
        builder = References()
        messages: list[ThreadHeaders] = []
        for m in hits:  # headers are read (and, for REFERENCES, linked) one message per step
            msg = read_headers(m, _number(m, uid), references)
            if references:
                builder.add(msg)
            else:
                messages.append(msg)
            yield
        tree = yield from (builder.finish() if references else ordered_subject(messages))
        text = yield from tree.render()
        self._write(b"* THREAD " + text + b"\r\n" if text else b"* THREAD\r\n")
        self.ok(tag, "Thread completed.", "SEARCH")


__all__ = ["ALGORITHMS", "References", "ThreadCommands", "ThreadHeaders", "ThreadTree", "message_ids",
           "ordered_subject", "read_headers", "trim_references"]
