// The webmail's live view: listens to /mail/events (server-sent events fed by the server's IMAP IDLE) and keeps
// the page true to the server: recalled or moved messages leave the list, an opened message that leaves the
// folder is replaced by a notice, new mail appears. Loaded only on view=live pages (CSP script-src 'self').
"use strict";
(() => {
  const main = document.getElementById("mail");
  if (!main || main.dataset.view !== "live" || !main.dataset.folder) return;
  const folder = main.dataset.folder;
  const openedUid = main.dataset.uid ? Number(main.dataset.uid) : null;
  const status = document.getElementById("live-status");
  let source = null;
  let backoff = 500;
  let refreshing = null;

  function setStatus(text, cls) {
    if (!status) return;
    status.textContent = text;
    status.className = "live-status " + cls;
  }

  function parseUids(text) {
    const out = new Set();
    for (const part of (text || "").split(",")) {
      if (!part) continue;
      const [a, b] = part.split(":").map(Number);
      if (b === undefined) { out.add(a); continue; }
      for (let u = Math.min(a, b); u <= Math.max(a, b); u++) out.add(u);
    }
    return out;
  }

  function rows() {
    return Array.from(document.querySelectorAll("#messages li.msg"));
  }

  // the folder list's unread badge follows the rows the page adds, drops and marks (the count covers every page
  // of the folder; a change on another page is picked up at the next "ready")
  function adjustUnread(delta) {
    if (!delta) return;
    const item = Array.from(document.querySelectorAll("nav.folders li[data-folder]"))
      .find((li) => li.dataset.folder === folder);
    if (!item) return;
    let badge = item.querySelector(".unread-count");
    const now = Math.max(0, (badge ? Number(badge.textContent) : 0) + delta);
    if (!now) { if (badge) badge.remove(); return; }
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "unread-count";
      badge.title = "unread";
      item.append(" ", badge);
    }
    badge.textContent = String(now);
  }

  function removeRows(uids) {
    let unread = 0;
    for (const row of rows()) {
      if (!uids.has(Number(row.dataset.uid))) continue;
      if (row.classList.contains("unread")) unread += 1;
      row.remove();
    }
    adjustUnread(-unread);
  }

  function showRecalled() {
    const article = document.getElementById("message");
    if (!article || article.classList.contains("recalled")) return;
    article.replaceChildren();
    article.classList.add("recalled");
    const note = document.createElement("p");
    note.className = "recalled";
    note.textContent = "This message was recalled by the sender";
    article.appendChild(note);
    for (const form of document.querySelectorAll("form.move")) form.remove();
  }

  async function refreshList() {
    const current = document.getElementById("message-list");
    if (!current) return;
    if (refreshing) return refreshing;
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "list");
    refreshing = (async () => {
      try {
        const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (!response.ok) return;
        const template = document.createElement("template");
        template.innerHTML = await response.text();
        const fresh = template.content.getElementById("message-list");
        const now = document.getElementById("message-list");
        if (!fresh || !now) return;
        const known = new Set(rows().map((r) => r.dataset.uid));
        let unread = 0;
        for (const row of fresh.querySelectorAll("li.msg")) {
          if (known.has(row.dataset.uid)) continue;
          row.classList.add("fresh");
          if (row.classList.contains("unread")) unread += 1;
        }
        now.replaceWith(fresh);
        adjustUnread(unread);
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  function onReady(event) {
    backoff = 500;
    setStatus("live: changes on the server show here at once", "live");
    const present = parseUids(JSON.parse(event.data).uids);
    if (openedUid !== null && !present.has(openedUid)) showRecalled();
    const shown = rows().map((r) => Number(r.dataset.uid));
    const gone = new Set(shown.filter((u) => !present.has(u)));
    if (gone.size) removeRows(gone);
    const newest = shown.length ? Math.max(...shown) : 0;
    if (Array.from(present).some((u) => u > newest)) refreshList();
  }

  function onVanished(event) {
    const uids = new Set(JSON.parse(event.data).uids);
    removeRows(uids);
    if (openedUid !== null && uids.has(openedUid)) showRecalled();
  }

  function onFlags(event) {
    const data = JSON.parse(event.data);
    for (const row of rows()) {
      if (Number(row.dataset.uid) !== data.uid) continue;
      if (row.classList.contains("unread") === Boolean(data.seen)) adjustUnread(data.seen ? -1 : 1);
      row.classList.toggle("read", data.seen);
      row.classList.toggle("unread", !data.seen);
    }
  }

  function connect() {
    source = new EventSource("/mail/events?" + new URLSearchParams({ folder }));
    source.addEventListener("ready", onReady);
    source.addEventListener("vanished", onVanished);
    source.addEventListener("new", () => refreshList());
    source.addEventListener("flags", onFlags);
    // a removal the server could not name, or a lost IMAP connection: start again from a fresh "ready"
    source.addEventListener("resync", reconnect);
    source.addEventListener("lost", reconnect);
    source.onerror = () => {
      setStatus("reconnecting…", "down");
      if (source.readyState === EventSource.CLOSED) {
        // refused (401, 429, 5xx): the browser gives up on its own, so retry with a growing pause
        window.setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 15000);
      }
    };
  }

  function reconnect() {
    if (source) source.close();
    setStatus("reconnecting…", "down");
    window.setTimeout(connect, 100);
  }

  window.addEventListener("pagehide", () => { if (source) source.close(); });
  connect();
})();
