"""The conditions reality has that the article's table lacks, carried out over the real servers for the engine.

Why a module of its own: each condition adds people and devices to a trial (a live web page, a phone, the other
members of a distribution list, the other readers of a shared mailbox, a colleague at another provider) and
copies the recall cannot reach (a forward, an auto-forward, a quoting reply, a lock-screen line, a phone's synced
copy). The engine (engine.py) calls in here at fixed points (slot, trial start, delivery, settle, the new events,
outcome, cleanup), so its own steps stay as they were.

Every copy is made as it is made in life: a forward and a reply are SMTP submissions by the recipient, the
auto-forward is the organisation's server sending a copy on at delivery (org_routing.py) over a real relay hop to
mail.example, the phone is a second IMAP client of the same user that fetched the whole message (BODY[]) and then
loses its connection, the list is expanded by the server. The outcome says, besides the verdict, what is left
(`recall_lab.harness.clients.outcome.Residue`).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any

import aiosmtplib

from recall_lab.harness.clients.outcome import (
    ClientCopy,
    ClientVerdict,
    Escape,
    RecipientOutcome,
    Residue,
    combine,
    judge,
)
from recall_lab.harness.clients.preview import preview_of
from recall_lab.harness.own_name import client_name

ORG = "corp.example"
EXTERNAL = "mail.example"
SETTLE_TIMEOUT = 10.0


def _password(lab: Any, address: str) -> str:
    from recall_lab.harness.config import default_password

    try:
        return lab.password(address)
    except KeyError:
        return default_password(address)


def _ensure_user(lab: Any, address: str) -> str:
    if address not in lab.users(lab.domain_of(address)):
        lab.add_user(address, _password(lab, address))
    return address


def _policy(lab: Any, name: str) -> Any:
    policy = lab.services(ORG).policy(name)
    if policy is None:
        raise RuntimeError(f"{ORG} runs no {name} policy (import recall_lab.harness.scenarios.org_routing "
                           "before the lab starts)")
    return policy


def _desktop(lab: Any, user: str, name: str, *, legacy: bool) -> Any:
    from recall_lab.harness.clients.desktop import DesktopClient

    return DesktopClient(user, _password(lab, user), lab.imap(ORG), submission=lab.submission(ORG),
                         folders=["INBOX"], process_recalls_on_arrival=legacy, name=name)


# --- slots ---------------------------------------------------------------------------------------------------


def slot_recipient(lab: Any, scenario: Any, index: int, default: str) -> str:
    """The mailbox the slot's own desktop client reads: the shared mailbox, or the list's first member."""
    if scenario.recipient == "shared":
        return _ensure_user(lab, f"shared{index + 1}@{ORG}")
    return default


async def open_slot(engine: Any, slot: Any, scenario: Any) -> None:
    """Accounts, server rules and extra clients of the slot (kept across its trials)."""
    lab, legacy = engine.lab, engine.mode == "legacy"
    extra: dict[str, Any] = {"clients": []}
    slot.extra = extra
    k = slot.index
    if scenario.recipient == "list":
        address = _ensure_user(lab, f"team{k + 1}@{ORG}")
        members = [slot.recipient] + [_ensure_user(lab, f"{slot.recipient.partition('@')[0]}.m{j}@{ORG}")
                                      for j in range(1, scenario.members)]
        _policy(lab, "distribution_lists").set_list(address, members)
        extra.update(address=address, members=members)
        for j, member in enumerate(members[1:], start=1):
            extra["clients"].append((member, _desktop(lab, member, f"desktop client of member {j}", legacy=legacy)))
    elif scenario.recipient == "shared":
        # every reader's client shows the shared mailbox; the first one's processes a classic recall
        for j in range(1, scenario.members):
            extra["clients"].append((slot.recipient, _desktop(lab, slot.recipient, f"desktop client of reader {j}",
                                                              legacy=False)))
    escapes = set(scenario.escapes)
    if escapes & {"forward", "auto-forward"}:
        extra["outside"] = f"dave{k + 1}@{EXTERNAL}" if k else f"dave@{EXTERNAL}"
        _ensure_user(lab, extra["outside"])
    if "auto-forward" in escapes:
        _policy(lab, "forwarding").set_forward(slot.recipient, extra["outside"])
    if escapes & {"lock-screen", "phone-sync"}:
        extra["phone"] = _desktop(lab, slot.recipient, "phone", legacy=False)
        extra["clients"].append((slot.recipient, extra["phone"]))
    for _user, client in extra["clients"]:
        await asyncio.wait_for(client.start(), SETTLE_TIMEOUT)


async def close_slot(engine: Any, slot: Any) -> None:
    extra = getattr(slot, "extra", None) or {}
    for _user, client in extra.get("clients", ()):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.go_offline(), SETTLE_TIMEOUT)
            await asyncio.wait_for(client.stop(), SETTLE_TIMEOUT)
    with contextlib.suppress(Exception):
        if "address" in extra:
            _policy(engine.lab, "distribution_lists").set_list(extra["address"], [])
        if "outside" in extra:
            _policy(engine.lab, "forwarding").set_forward(slot.recipient, None)


def send_to(slot: Any) -> str:
    """Where the sender sends: the list's address for a list, else the slot's recipient."""
    return (getattr(slot, "extra", None) or {}).get("address", slot.recipient)


# --- a trial -------------------------------------------------------------------------------------------------


async def start_trial(engine: Any, ctx: Any) -> None:
    """Every extra client online (a phone may have ended the last trial offline); the live page open."""
    for _user, client in ctx.slot.extra.get("clients", ()):
        if not client.online:
            await client.go_online()
    ctx.conditions = {"escapes": [], "read": set(), "sent": []}
    if ctx.scenario.client == "live-web":
        from recall_lab.harness.clients.live_web import LiveWebClient

        ctx.web = await LiveWebClient(ctx.slot.recipient, engine.lab.password(ctx.slot.recipient), engine.lab.web.url,
                                      name="live web page", timeout=SETTLE_TIMEOUT).start()


async def after_delivery(engine: Any, ctx: Any) -> None:
    for _user, client in ctx.slot.extra.get("clients", ()):
        if client.online:
            await client.wait_for_message(ctx.message_id, timeout=SETTLE_TIMEOUT)
    if ctx.scenario.client == "live-web" and ctx.web is not None:
        if await ctx.web.wait_until_shown(ctx.message_id):
            ctx.note(f"{ctx.slot.recipient}'s live web page hears `new` on its event stream and lists it")


async def settle(engine: Any, ctx: Any) -> None:
    """Extra clients settled (NOOP round trips); the live page agrees with the server about the message."""
    for _user, client in ctx.slot.extra.get("clients", ()):
        if client.online:
            await asyncio.wait_for(client.settle(), SETTLE_TIMEOUT)
    web = ctx.web
    if ctx.scenario.client == "live-web" and web is not None and ctx.delivered:
        store = engine.lab.store(ctx.slot.recipient_domain)
        in_inbox = any(loc.mailbox == "INBOX" for loc in store.find_by_message_id(ctx.slot.recipient, ctx.message_id))
        if in_inbox and not web.in_listing(ctx.message_id):
            await web.wait_until_shown(ctx.message_id)
        elif not in_inbox and web.has_message_id(ctx.message_id):
            # the IDLE push reaches the page's stream as `vanished`; the page drops it when that arrives
            await web.wait_until_gone(ctx.message_id)


async def before_recall(engine: Any, ctx: Any, event: Any) -> None:
    """Age the sender's copy by the simulated time since the send, when the organisation limits a recall's age.

    Why: the cloud recall measures an original's age from the INTERNALDATE of the sender's own copy (when her
    server accepted it, recall/policy.py), which the store stamps by the wall clock, while a trial jumps days of
    simulated time in an instant. Filing the copy again (store API: append with an INTERNALDATE, expunge the old
    one) makes it as old as the plan says, so `recall_max_age_days` judges the simulated age."""
    if "recall_max_age_days" not in ctx.scenario.policies or engine.mode != "cloud":
        return
    recall = engine.lab.services(ORG).policy("recall")
    store, sender = engine.lab.store(ORG), ctx.slot.sender
    sent_at = recall.now() - timedelta(seconds=event.at - (ctx.plan.delivered_at or 0.0))
    for loc in store.find_by_message_id(sender, ctx.message_id):
        record = store.get(sender, loc.mailbox, loc.uid)
        store.append(sender, loc.mailbox, store.fetch_raw(sender, loc.mailbox, loc.uid), record.flags,
                     internaldate=sent_at, origin="recall-lab-clock")
        store.expunge(sender, loc.mailbox, [loc.uid], origin="recall-lab-clock")
    days = event.at / 86400
    ctx.note(f"{days:.1f} days have passed since the send (the organisation recalls messages up to "
             f"{ctx.scenario.policies['recall_max_age_days']} days old)")


async def on_phone(engine: Any, ctx: Any, event: Any) -> None:
    phone = ctx.slot.extra.get("phone")
    if phone is None or not phone.has_message_id(ctx.message_id):
        return
    escapes = set(ctx.scenario.escapes)
    if "lock-screen" in escapes:
        shown = phone.preview(ctx.message_id)
        if shown is not None:
            ctx.conditions["escapes"].append(Escape("lock-screen", f"{ctx.slot.recipient}'s phone lock screen",
                                                    "subject and first line"))
            ctx.note(f"the phone's lock screen shows {shown.subject!r} - {shown.first_line!r}: read, whatever "
                     "happens to the message")
    if "phone-sync" in escapes:
        await phone.go_offline()
        ctx.note("the phone has synced the whole message (BODY[]) and loses its connection (pocket, flight mode)")


async def _opened_copy(engine: Any, ctx: Any) -> bytes | None:
    """The recipient opens the message to forward or reply to it (FETCH BODY[]); None when it is gone."""
    desktop = ctx.slot.desktop
    if desktop is None or not desktop.has_message_id(ctx.message_id):
        return None
    if desktop.online and ctx.user is not None:
        try:
            await ctx.user.open(ctx.message_id)
        except Exception:  # noqa: BLE001 - gone on the server meanwhile
            return None
    found = desktop.cache.find(ctx.message_id)
    if not found:
        return None
    if not ctx.recalled:
        ctx.read_before_recall = True
    return found[0].raw


async def _submit(engine: Any, user: str, msg: EmailMessage, to: list[str]) -> None:
    ep = engine.lab.submission(ORG)
    smtp = aiosmtplib.SMTP(hostname=ep.host, port=ep.port, start_tls=False, use_tls=False, timeout=SETTLE_TIMEOUT,
                           local_hostname=client_name(user))
    await smtp.connect()
    try:
        await smtp.login(user, engine.lab.password(user))
        await smtp.send_message(msg, sender=user, recipients=to)
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()
    await engine.lab.wait_idle(users=[user, *to])  # the relay hop to another provider runs in the background


def _quoted(raw: bytes) -> tuple[str, str]:
    from email import policy
    from email.parser import BytesParser

    from recall_lab.harness.clients.preview import body_text

    msg = BytesParser(policy=policy.default).parsebytes(raw)
    return str(msg.get("Subject", "")), body_text(msg)  # type: ignore[arg-type]


async def on_forward(engine: Any, ctx: Any, event: Any) -> None:
    raw = await _opened_copy(engine, ctx)
    if raw is None:
        ctx.note("the recipient goes to forward it: it is no longer there")
        return
    user, outside = ctx.slot.recipient, ctx.slot.extra["outside"]
    subject, _text = _quoted(raw)
    msg = EmailMessage()
    msg["From"] = user
    msg["To"] = outside
    msg["Subject"] = f"Fwd: {subject}"
    msg["Message-ID"] = make_msgid(domain=ORG)
    msg.set_content("FYI, see below.\n")
    msg.add_attachment(raw, maintype="message", subtype="rfc822")
    await _submit(engine, user, msg, [outside])
    ctx.conditions["sent"].append(("forwarded", outside, str(msg["Message-ID"])))
    ctx.note(f"{user} forwards it to {outside} (SMTP submission, relayed to {EXTERNAL})")


async def on_reply(engine: Any, ctx: Any, event: Any) -> None:
    raw = await _opened_copy(engine, ctx)
    if raw is None:
        ctx.note("the recipient goes to reply: it is no longer there")
        return
    user, sender = ctx.slot.recipient, ctx.slot.sender
    subject, text = _quoted(raw)
    msg = EmailMessage()
    msg["From"] = user
    msg["To"] = formataddr(("", sender))
    msg["Subject"] = f"Re: {subject}"
    msg["Message-ID"] = make_msgid(domain=ORG)
    msg["In-Reply-To"] = ctx.message_id
    msg.set_content("Thanks, noted.\n\n" + "".join(f"> {line}\n" for line in text.splitlines()))
    await _submit(engine, user, msg, [sender])
    ctx.conditions["sent"].append(("quoted-in-reply", sender, str(msg["Message-ID"])))
    ctx.note(f"{user} replies to {sender}, quoting the message (SMTP submission)")


async def on_member_open(engine: Any, ctx: Any, event: Any) -> None:
    k = int(event.note)
    clients = ctx.slot.extra.get("clients", ())
    if k > len(clients):
        return
    user, client = clients[k - 1]
    who = f"member {k} ({user})" if ctx.scenario.recipient == "list" else f"reader {k} of {user}"
    if not client.online or not client.has_message_id(ctx.message_id):
        ctx.note(f"{who} goes to open it: it is no longer there")
        return
    try:
        await client.open(ctx.message_id)
    except Exception:  # noqa: BLE001 - gone on the server meanwhile
        ctx.note(f"{who} goes to open it: it is no longer there")
        return
    if not ctx.recalled:
        ctx.conditions["read"].add(user if ctx.scenario.recipient == "list" else f"reader {k}")
        if ctx.scenario.recipient == "shared":
            ctx.read_before_recall = True  # one mailbox: what one reader read, the recipient has read
    ctx.note(f"{who} opens it (FETCH BODY[] sets \\Seen)")


# --- the outcome ---------------------------------------------------------------------------------------------


def member_outcomes(engine: Any, ctx: Any, own: RecipientOutcome) -> dict[str, ClientVerdict]:
    """A list's members, each judged like a recipient of their own (the slot's recipient is the first)."""
    store = engine.lab.store(ORG)
    verdicts = {own.recipient: judge(own)}
    for user, client in ctx.slot.extra.get("clients", ()):
        if user in verdicts:
            continue
        outcome = RecipientOutcome(recipient=user,
                                   server_copy=bool(store.find_by_message_id(user, ctx.message_id)),
                                   clients=(ClientCopy(client.name, "desktop", client.has_message_id(ctx.message_id)),),
                                   read_before_recall=user in ctx.conditions.get("read", ()))
        verdicts[user] = judge(outcome)
    return verdicts


def extra_copies(ctx: Any) -> list[ClientCopy]:
    """The extra clients that show the recipient's own mailbox (a shared mailbox's readers, the phone)."""
    out = []
    for user, client in ctx.slot.extra.get("clients", ()):
        if user == ctx.slot.recipient:
            kind = "phone" if client.name == "phone" else "desktop"
            out.append(ClientCopy(client.name, kind, client.has_message_id(ctx.message_id)))
    return out


def residue(engine: Any, ctx: Any, outcome: dict[str, Any]) -> Residue:
    """What is left once the recall is done (see outcome.Residue)."""
    lab, slot = engine.lab, ctx.slot
    users = [slot.recipient, *(u for u, _c in slot.extra.get("clients", ()) if u != slot.recipient)]
    recoverable, held, until = False, False, None
    if slot.recipient_domain == ORG:
        area = lab.services(ORG).recoverable
        for user in dict.fromkeys(users):
            items = [i for i in area.items(user) if i.message_id and i.message_id.strip() == ctx.message_id]
            if not items:
                continue
            recoverable = True
            if area.holds(user):
                held = True
            else:
                last = max(i.removed_at for i in items) + timedelta(seconds=area.settings.retention_seconds)
                until = max(until or last.date().isoformat(), last.date().isoformat())
    escapes = list(ctx.conditions.get("escapes", ()))
    ext = lab.store(EXTERNAL)
    for kind, where, mid in ctx.conditions.get("sent", ()):
        domain = lab.domain_of(where)
        if kind == "forwarded" and ext.find_by_message_id(where, mid):
            escapes.append(Escape("forwarded", f"{where}'s mailbox, another provider"))
        elif kind == "quoted-in-reply" and lab.store(domain).find_by_message_id(where, mid):
            escapes.append(Escape("quoted-in-reply", f"a reply in {where}'s mailbox and {slot.recipient}'s Sent",
                                  "its text, quoted"))
    outside = slot.extra.get("outside")
    if "auto-forward" in ctx.scenario.escapes and outside and ext.find_by_message_id(outside, ctx.message_id):
        escapes.append(Escape("auto-forwarded", f"{outside}'s mailbox, another provider"))
    phone = slot.extra.get("phone")
    if phone is not None and "phone-sync" in ctx.scenario.escapes and phone.has_message_id(ctx.message_id):
        escapes.append(Escape("phone-sync", f"{slot.recipient}'s phone, offline"))
    read = ctx.read_before_recall or bool(ctx.conditions.get("read"))
    return Residue(gone_from_every_view=not outcome.get("server_copy") and not outcome.get("client_copy")
                   and not outcome.get("members_visible"),
                   recoverable=recoverable, recoverable_until=None if held else until, held=held,
                   read_before_recall=read, escapes=tuple(escapes))


def residue_json(engine: Any, ctx: Any, outcome: dict[str, Any]) -> dict[str, Any]:
    """The residue as the trial's JSON holds it; a list's trial adds each member's verdict."""
    out = residue(engine, ctx, outcome).to_json()
    if "members" in outcome:
        out["members"] = dict(outcome["members"])
    if not ctx.scenario.auto_process_recalls:
        # a client without automatic processing: which of the two messages the recipient opened first decides
        out["opened_first"] = ctx.conditions.get("opened_first", "neither")
    return out


def judge_members(engine: Any, ctx: Any, own: RecipientOutcome) -> dict[str, Any]:
    """The list's verdict (the worst member's) and each member's, for the trial's outcome."""
    verdicts = member_outcomes(engine, ctx, own)
    verdict = combine(verdicts.values())
    store = engine.lab.store(ORG)
    visible = any(store.find_by_message_id(u, ctx.message_id) or c.has_message_id(ctx.message_id)
                  for u, c in ctx.slot.extra.get("clients", ()))
    counts = {v.value: sum(1 for x in verdicts.values() if x is v) for v in ClientVerdict}
    words = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return {"verdict": verdict.value, "members": {u: v.value for u, v in verdicts.items()},
            "members_visible": visible,
            "explain": f"{send_to(ctx.slot)} ({len(verdicts)} members): {verdict.value} ({words}; the list's "
                       "verdict is its worst member's)"}


def preview_line(raw: bytes) -> str:
    shown = preview_of(raw)
    return f"{shown.subject!r} - {shown.first_line!r}" if shown is not None else ""


async def cleanup(engine: Any, ctx: Any) -> None:
    """Close the live page; empty the mailboxes the trial's extra people and copies used."""
    if ctx.scenario.client == "live-web" and ctx.web is not None:
        await ctx.web.close()
    lab, slot = engine.lab, ctx.slot
    users = {u for u, _c in slot.extra.get("clients", ()) if u != slot.recipient}
    if slot.extra.get("outside"):
        users.add(slot.extra["outside"])
    if "address" in slot.extra:
        users.add(slot.extra["address"])
    for user in users:
        store = lab.store(lab.domain_of(user))
        for info in store.list_mailboxes(user):
            if info.exists:
                store.expunge(user, info.name, [r.uid for r in store.messages(user, info.name)],
                              origin="recall-lab-cleanup")
