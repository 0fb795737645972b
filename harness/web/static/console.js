// The lab console, live: follows /console/events (server-sent events) and updates the page rendered by the
// server. Everything it writes goes through textContent, never HTML. Without it the page is a snapshot.
"use strict";
(function () {
  const root = document.getElementById("console");
  if (!root) { return; }
  const labId = root.dataset.lab;
  let lastSeq = Number(root.dataset.lastSeq || "0");
  const timeline = document.getElementById("timeline");
  const status = document.getElementById("live-status");
  const MAX_LINES = 500;
  let source = null;
  let retry = null;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function kindClass(kind) {
    const k = String(kind).toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "");
    return "kind-" + (k || "other");
  }

  function recallHref(original) {
    const core = String(original).trim().replace(/^<+|>+$/g, "");
    return "/console/recalls/" + encodeURIComponent(core).replace(/%40/g, "@");
  }

  function addRecall(original, label) {
    const list = document.getElementById("recalls");
    const key = "<" + String(original).trim().replace(/^<+|>+$/g, "") + ">";
    if (!list) { return; }
    const known = list.querySelector('li[data-original="' + CSS.escape(key) + '"]');
    if (known) {  // first named by its Message-ID only: name it by the subject once an entry gives it
      const a = known.querySelector("a");
      if (label && a && a.textContent === key) { a.textContent = label; }
      return;
    }
    const li = el("li");
    li.dataset.original = key;
    const a = el("a", "", label || key);
    a.href = recallHref(original);
    li.appendChild(a);
    list.insertBefore(li, list.firstChild);
    const none = document.getElementById("no-recalls");
    if (none) { none.remove(); }
  }

  function addEntry(e) {
    if (e.seq <= lastSeq) { return; }
    lastSeq = e.seq;
    const li = el("li", "entry fresh " + kindClass(e.kind));
    li.dataset.seq = String(e.seq);
    const t = el("time", "", String(e.at || "").slice(11, 19));
    t.setAttribute("datetime", String(e.at || ""));
    li.append(t, " ", el("span", "kind", e.kind), " ", el("span", "dom", e.domain));
    if (e.original) {
      const a = el("a", "recall-link", "recall");
      a.href = recallHref(e.original);
      li.append(" ", a);
      addRecall(e.original, e.message_kind ? "" : e.subject);
    }
    li.append(" ", el("span", "text", e.text));
    timeline.insertBefore(li, timeline.firstChild);
    while (timeline.children.length > MAX_LINES) { timeline.lastElementChild.remove(); }
    const none = document.getElementById("no-entries");
    if (none) { none.remove(); }
  }

  function folderKey(domain, user, folder) { return domain + "\u0000" + user + "\u0000" + folder; }

  function previousCounts() {
    const seen = new Map();
    document.querySelectorAll("article.domain").forEach(function (art) {
      art.querySelectorAll("tbody tr").forEach(function (tr) {
        const user = tr.querySelector("td.user").textContent;
        tr.querySelectorAll(".folder").forEach(function (f) {
          const exists = f.querySelector(".exists");
          seen.set(folderKey(art.dataset.domain, user, f.dataset.folder), exists ? exists.textContent : "");
        });
      });
    });
    return seen;
  }

  function renderCounts(data) {
    const box = document.getElementById("domains");
    const before = previousCounts();
    const recalls = box.querySelector(".recall-list");
    box.querySelectorAll("article.domain").forEach(function (a) { a.remove(); });
    data.domains.forEach(function (d) {
      const art = el("article", "domain");
      art.dataset.domain = d.name;
      const h = el("h2", "", d.name + " ");
      h.appendChild(el("span", "role", d.role));
      const relay = el("p", "relay", "relay queue: ");
      relay.appendChild(el("b", "relay-pending", String(d.relay_pending)));
      const table = el("table", "users");
      const head = el("tr");
      head.append(el("th", "", "user"), el("th", "", "folders: messages (unread)"));
      const thead = el("thead");
      thead.appendChild(head);
      const tbody = el("tbody");
      d.users.forEach(function (u) {
        const tr = el("tr");
        const cell = el("td", "folders");
        u.folders.forEach(function (f) {
          let cls = "folder";
          if (f.unseen) { cls += " has-unread"; }
          if (f.exists) { cls += " has-mail"; }
          const old = before.get(folderKey(d.name, u.user, f.name));
          if (old !== undefined && old !== String(f.exists)) { cls += " changed"; }
          const span = el("span", cls, f.name + " ");
          span.dataset.folder = f.name;
          span.appendChild(el("b", "exists", String(f.exists)));
          if (f.unseen) { span.append(" ", el("i", "unseen", "(" + f.unseen + ")")); }
          cell.appendChild(span);
        });
        tr.append(el("td", "user", u.user), cell);
        tbody.appendChild(tr);
      });
      table.append(thead, tbody);
      art.append(h, relay, table);
      box.insertBefore(art, recalls);
    });
  }

  function connect() {
    retry = null;
    const url = "/console/events?lab=" + encodeURIComponent(labId) + "&since=" + lastSeq;
    source = new EventSource(url);
    source.addEventListener("open", function () { setStatus("live", "live"); });
    source.addEventListener("hello", function (ev) {
      const hello = JSON.parse(ev.data);
      if (hello.lab !== labId) {
        setStatus("reconnecting", "new lab: reloading");
        source.close();
        window.location.reload();
      }
    });
    source.addEventListener("entry", function (ev) { addEntry(JSON.parse(ev.data)); });
    source.addEventListener("counts", function (ev) { renderCounts(JSON.parse(ev.data)); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        // refused (401, 429) or the lab is gone for good: try again later with a fresh stream
        setStatus("reconnecting", "offline: retrying");
        if (retry === null) { retry = window.setTimeout(connect, 3000); }
      } else {
        setStatus("reconnecting", "reconnecting");
      }
    });
  }

  setStatus("reconnecting", "connecting");
  connect();
})();
