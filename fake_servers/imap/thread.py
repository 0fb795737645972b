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
runs as a generator (session.py): a step per message whose header is read (the keys are then cached, in
sort_keys.py, so a second THREAD reads none), per LINK_BATCH messages linked, then steps of at most
STEP_WORK units of tree work, so other clients are served in between. Why bounded: a message's References
count as at most MAX_REFERENCES ids (the first, which names the thread's start, and the last ones, its
nearest ancestors, as clients trim them), and the loop checks of one THREAD may visit at most MAX_WORK nodes
(a crafted mailbox could make them quadratic): beyond that the command gets NO [LIMIT]. Why no recursion:
threads nest as deep as a mailbox is long, far beyond Python's recursion limit, so every walk is a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from ..store.base import NoSuchMessage
from .errors import CommandFailed, ParseError
from .lexer import Lexer
from .search import Msg, seq_uid
from .selected import SelectedMailbox
from .sort import ascii_casemap, base_subject_info, instant
from .sort_keys import GONE, IDS, MAX_REFERENCES, SortKeys, keys_of_view, message_ids, trim_references
from .state import SessionCore

#: The algorithms THREAD accepts (announced as THREAD=<name>).
ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")

#: Nodes the loop checks of one THREAD may visit in all (beyond: NO [LIMIT]).
MAX_WORK = 20_000_000
#: Units of tree work (nodes visited, sorted or written) per step.
STEP_WORK = 2048
#: Messages linked (REFERENCES) per step.
LINK_BATCH = 512

Steps = Iterator[None]


class ThreadHeaders(NamedTuple):
    """What threading reads of one message.

    Threading reads these by position (the _NUMBER... constants), so a plain tuple in this layout serves as
    well, and `thread_headers` makes one: CPython stops tracking a plain tuple of plain values in its garbage
    collector (never a NamedTuple), and one THREAD keeps one per message over its steps, which would
    otherwise trigger full collections of the whole server's heap."""

    number: int  # what the answer names it by: its sequence number or UID
    uid: int
    date: float  # RFC 5256 sent date (sort.sent_time)
    subject: str | None  # the first Subject, decoded; None without one
    message_id: str | None
    references: Sequence[str]  # References (or the first In-Reply-To id), trimmed to MAX_REFERENCES
    base: bytes | None = None  # the subject's base subject (i;ascii-casemap) when known; else computed
    reply: bool = False  # with `base`: whether the subject marked a reply


_NUMBER, _UID, _DATE, _SUBJECT, _MESSAGE_ID, _REFERENCES, _BASE, _REPLY = range(8)


def subject_info(msg: ThreadHeaders) -> tuple[bytes, bool]:
    """The i;ascii-casemap base subject and reply mark of a message (b"" without a subject)."""
    if msg[_BASE] is not None:
        return msg[_BASE], msg[_REPLY]
    if msg[_SUBJECT] is None:
        return b"", False
    base, reply = base_subject_info(msg[_SUBJECT])
    return ascii_casemap(base), reply


def thread_headers(number: int, uid: int, record: Any, keys: SortKeys) -> ThreadHeaders:
    """One searched message's threading headers, from its record and its cached keys (sort_keys.py)."""
    date = instant(record.internaldate) if keys.date is None else keys.date
    return cast(ThreadHeaders, (number, uid, date, keys.subject, keys.message_id, keys.references, keys.base,
                                keys.reply))


def read_headers(m: Msg, number: int, with_ids: bool) -> ThreadHeaders:
    """One searched message's threading headers read from its view, without a cache (a message expunged
    meanwhile has none)."""
    try:
        keys = keys_of_view(m.view(), frozenset({IDS}) if with_ids else frozenset())
    except NoSuchMessage:
        keys = GONE
    return thread_headers(number, m.uid, m.record, keys)


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
        return (msg[_DATE], msg[_UID])

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
                    out.append(str(msg[_NUMBER]) if first else f" {msg[_NUMBER]}")
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
    keyed = [(subject_info(msg)[0], msg[_DATE], msg[_UID], i) for i, msg in enumerate(messages)]
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
        message_id = msg[_MESSAGE_ID]
        own = self.ids.get(message_id) if message_id is not None else None
        if own is not None and self.message[own] is None:
            self.message[own] = msg
        else:
            own = self._new(msg)  # no id, or a duplicate one: a node of its own
            if message_id is not None and message_id not in self.ids:
                self.ids[message_id] = own
        parent = -1
        for ref in msg[_REFERENCES]:
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
        # (2) the roots; a dummy without children goes, one with a single child gives way to it. A thread is
        # its root node (a dummy exactly when it has no message): plain ints, no object per thread.
        threads: list[int] = []
        for node in roots:
            if message[node] is not None:
                threads.append(node)
                continue
            kids = children.get(node)
            if not kids:
                continue
            threads.append(kids[0] if len(kids) == 1 else node)
        threads.sort(key=key)
        yield
        merged = self._gather(tree, threads)
        if merged is not None:
            threads = [t for t in threads if t not in merged]
            threads.sort(key=key)  # a dummy's first child may have changed
            yield
        tree.roots = threads
        return tree

    @staticmethod
    def _gather(tree: ThreadTree, threads: list[int]) -> set[int] | None:
        """(5) Threads whose base subjects agree become one (`threads` gains the dummies made over two);
        the threads merged into others, or None when none was."""
        message, children = tree.message, tree.children
        table: dict[bytes, int] = {}
        parent: dict[int, int] = {}  # thread -> the thread it is to be merged into
        reply_of: dict[int, bool] = {}
        for t in threads:
            first = message[children[t][0] if message[t] is None else t]
            if first is None or first[_SUBJECT] is None:
                continue
            subject, reply = subject_info(first)
            if not subject:
                continue
            held = table.get(subject)
            if held is None:
                table[subject] = t
            elif message[held] is not None and (message[t] is None or (reply_of[held] and not reply)):
                parent[held] = t
                table[subject] = t
            else:
                parent[t] = held
            reply_of[t] = reply
        if not parent:
            return None
        merged: set[int] = set()
        grown: set[int] = set()
        for t in list(threads):
            if t not in parent or t in merged:
                continue
            top = parent[t]
            while top in parent:
                top = parent[top]
            if message[t] is None:
                # both dummies: the children of both become siblings
                children.setdefault(top, []).extend(children.pop(t, []))
                grown.add(top)
                merged.add(t)
            elif message[top] is None or (reply_of[t] and not reply_of.get(top, False)):
                children.setdefault(top, []).append(t)  # a sibling of the held one's children
                grown.add(top)
                merged.add(t)
            else:
                new = tree.add(None)  # a dummy over both
                children[new] = [top, t]
                parent[top] = new
                merged.add(top)
                merged.add(t)
                grown.add(new)
                threads.append(new)
        for node in grown:  # keep every level in date order
            children[node].sort(key=tree.key)
        return merged if grown else None


class ThreadCommands(SessionCore):
    """THREAD and UID THREAD (a mixin of ImapSession; `_sel`, `_match_steps` and `_keys_steps` come
    from MessageCommands)."""

    if TYPE_CHECKING:  # what the mixin uses of MessageCommands
        def _sel(self) -> SelectedMailbox: ...

        def _match_steps(self, sel: SelectedMailbox, prog: Any, keep: Callable[[Msg], tuple[int, int]]
                         ) -> Generator[None, None, list[tuple[int, int]]]: ...

        def _keys_steps(self, sel: SelectedMailbox, uids: list[int], groups: frozenset[str]
                        ) -> Generator[None, None, list[SortKeys]]: ...

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
        hits = yield from self._match_steps(sel, prog, seq_uid)
        references = algorithm == "REFERENCES"
        groups = frozenset({IDS}) if references else frozenset()
        cached = yield from self._keys_steps(sel, [u for _, u in hits], groups)
        records = sel.records  # they stay until the tagged reply announces expunges
        messages = [thread_headers(u if uid else seq, u, records[u], k)
                    for (seq, u), k in zip(hits, cached, strict=True)]
        builder = References()
        if references:
            for start in range(0, len(messages), LINK_BATCH):  # linking: dict work, a batch per step
                for msg in messages[start:start + LINK_BATCH]:
                    builder.add(msg)
                yield
        tree = yield from (builder.finish() if references else ordered_subject(messages))
        text = yield from tree.render()
        self._write(b"* THREAD " + text + b"\r\n" if text else b"* THREAD\r\n")
        self.ok(tag, "Thread completed.", "SEARCH")


__all__ = ["ALGORITHMS", "MAX_REFERENCES", "References", "ThreadCommands", "ThreadHeaders", "ThreadTree",
           "message_ids", "ordered_subject", "read_headers", "subject_info", "thread_headers",
           "trim_references"]
