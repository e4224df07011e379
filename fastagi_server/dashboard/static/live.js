// Live calls: server-sent events from /events/live, about one a second while the page is open.
// Rows are built with textContent only (a caller name is never parsed as markup), and each
// call's duration ticks between events from the worker's figure.
"use strict";
(function () {
  const body = document.querySelector("#live-calls tbody");
  const count = document.getElementById("live-count");
  const empty = document.getElementById("live-empty");
  const workers = document.getElementById("workers");
  const ended = document.getElementById("ended");
  let seen = new Map();   // uuid -> call (the last snapshot)
  let stamp = performance.now();

  function fmt(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
  }
  function cell(tr, text, cls, sub) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.append(document.createTextNode(text == null ? "" : String(text)));
    if (sub !== undefined) {
      const d = document.createElement("div");
      d.className = "sub"; d.textContent = sub == null ? "" : String(sub);
      td.append(d);
    }
    tr.append(td);
    return td;
  }
  function row(c) {
    const tr = document.createElement("tr");
    tr.dataset.uuid = c.uuid;
    cell(tr, c.assistant, "", c.engine);
    cell(tr, c.caller_name, "caller", c.caller);
    cell(tr, c.dnid);
    const d = cell(tr, fmt(c.duration), "duration");
    d.dataset.duration = c.duration;
    const sp = document.createElement("span");
    sp.className = "speaking sp-" + (["caller", "agent", "both"].includes(c.speaking) ? c.speaking : "none");
    sp.textContent = c.speaking || "none";
    cell(tr, "").append(sp);
    cell(tr, c.turns);
    const last = cell(tr, "", "last");
    for (const [cls, text] of [["said caller-said", c.last_caller], ["said agent-said", c.last_agent]]) {
      const div = document.createElement("div");
      div.className = cls; div.textContent = text || "";
      last.append(div);
    }
    cell(tr, c.worker);
    return tr;
  }
  function noteEnded(c) {
    const first = ended.querySelector("li.muted");
    if (first) first.remove();
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "/calls/" + encodeURIComponent(c.uuid);
    a.textContent = (c.caller_name || c.caller || c.uuid) + " (" + c.assistant + ")";
    li.append(a, document.createTextNode(" ended after " + fmt(c.duration)));
    li.dataset.uuid = c.uuid;
    ended.prepend(li);
    while (ended.children.length > 20) ended.lastChild.remove();
  }
  function render(snap) {
    stamp = performance.now();
    const now = new Map(snap.calls.map(c => [c.uuid, c]));
    for (const [uuid, c] of seen) if (!now.has(uuid)) noteEnded(c);
    seen = now;
    body.replaceChildren(...snap.calls.map(row));
    count.textContent = String(snap.calls.length);
    empty.hidden = snap.calls.length > 0;
    workers.replaceChildren(...snap.workers.map(w => {
      const s = document.createElement("span");
      s.className = "worker " + (w.ok ? "ok" : "down");
      s.title = w.error || ""; s.textContent = "worker " + w.name;
      return s;
    }));
  }
  function tick() {
    const dt = (performance.now() - stamp) / 1000;
    for (const td of body.querySelectorAll("td.duration")) {
      td.textContent = fmt(parseFloat(td.dataset.duration || "0") + dt);
    }
  }
  for (const tr of body.querySelectorAll("tr")) {
    seen.set(tr.dataset.uuid, {uuid: tr.dataset.uuid, caller_name: tr.querySelector(".caller").firstChild.textContent,
      caller: "", assistant: tr.cells[0].firstChild.textContent.trim(),
      duration: parseFloat(tr.querySelector("td.duration").dataset.duration || "0")});
  }
  const events = new EventSource("/events/live");
  events.onmessage = ev => render(JSON.parse(ev.data));
  setInterval(tick, 250);
})();
