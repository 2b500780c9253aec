// hookline dashboard: live updates from /admin/stream (server-sent events), replay and dismiss buttons.
// No library, no build step. Served from /admin/static, so it runs with no network.
(function () {
  "use strict";
  var page = document.body.getAttribute("data-page");
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var TERMINAL = { succeeded: 1, dead: 1, skipped: 1 };
  var MAX_ROWS = 50;
  var lastChart = 0;
  var ERROR_PENDING = "(see the event)";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function badge(status) { return el("span", { "class": "badge " + status }, status); }

  function setStatus(cell, status) {
    if (!cell) return;
    cell.textContent = "";
    cell.appendChild(badge(status));
  }

  function eventRow(e) {
    var tr = el("tr", { "data-id": e.id });
    var idCell = el("td");
    idCell.appendChild(el("a", { href: "/admin/events/" + e.id }, e.id));
    tr.appendChild(idCell);
    tr.appendChild(el("td", {}, e.source));
    tr.appendChild(el("td", {}, e.event_type || ""));
    tr.appendChild(el("td", {}, e.tenant || ""));
    var st = el("td", { "class": "status" });
    st.appendChild(badge(e.status));
    tr.appendChild(st);
    tr.appendChild(el("td", { "class": "time" }, e.received_at));
    return tr;
  }

  function deadRow(e) {
    var tr = el("tr", { "data-id": e.id });
    var idCell = el("td");
    idCell.appendChild(el("a", { href: "/admin/events/" + e.id }, e.id));
    tr.appendChild(idCell);
    tr.appendChild(el("td", {}, e.source));
    tr.appendChild(el("td", {}, e.event_type || ""));
    tr.appendChild(el("td", {}, e.attempts));
    // the live message carries no error: a placeholder until the overview's own (masked) row is read
    tr.appendChild(el("td", { "class": "error-text pending" }, ERROR_PENDING));
    var st = el("td", { "class": "status" });
    st.appendChild(badge(e.status));
    tr.appendChild(st);
    var act = el("td");
    act.appendChild(el("button", { type: "button", "class": "replay", "data-id": e.id }, "Replay"));
    act.appendChild(document.createTextNode(" "));
    act.appendChild(el("button", { type: "button", "class": "dismiss", "data-id": e.id }, "Dismiss"));
    tr.appendChild(act);
    return tr;
  }

  function updateOverview(msg) {
    var body = document.querySelector("#events tbody");
    var dead = document.querySelector("#dead tbody");
    var arrived = [];
    msg.events.forEach(function (e) {
      var row = body.querySelector('tr[data-id="' + e.id + '"]');
      if (row) {
        setStatus(row.querySelector(".status"), e.status);
      } else {
        var rows = body.querySelectorAll("tr[data-id]");
        var before = null;
        for (var i = 0; i < rows.length; i++) {
          if (Number(rows[i].getAttribute("data-id")) < e.id) { before = rows[i]; break; }
        }
        body.insertBefore(eventRow(e), before);
        while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
      }
      var drow = dead.querySelector('tr[data-id="' + e.id + '"]');
      if (drow) {
        setStatus(drow.querySelector(".status"), e.status);
        var btn = drow.querySelector("button.replay");
        if (btn) btn.disabled = !TERMINAL[e.status];
        if (e.status === "succeeded" && btn) btn.textContent = "Replayed";
        var dbtn = drow.querySelector("button.dismiss");
        if (dbtn && e.status !== "dead") dbtn.disabled = true;
      } else if (e.status === "dead") {
        dead.insertBefore(deadRow(e), dead.firstChild);
        arrived.push(String(e.id));
      }
    });
    if (arrived.length) refreshSections([], arrived);
    var note = document.querySelector("#dead + .empty-note");
    if (note) note.hidden = dead.rows.length > 0;
    if (msg.counts) {
      // the tiles, and the count in the link to all dead letters
      document.querySelectorAll(".n[data-status]").forEach(function (n) {
        n.textContent = msg.counts[n.getAttribute("data-status")] || 0;
      });
    }
    var now = Date.now();
    if (now - lastChart > 10000) {
      lastChart = now;
      var img = document.getElementById("chart");
      if (img) img.src = "/admin/chart.svg?t=" + now;
    }
  }

  // Re-reads of this page: one at a time, in order. Sections asked for while one is under way are read
  // by one more after it (so the last answer always follows the last request); on the overview, live
  // updates that arrive meanwhile are held and applied on top of the fresh sections.
  var wanted = {}, errorsWanted = {}, reading = false, again = false, held = [];

  function refreshSections(ids, deadIds) {
    ids.forEach(function (id) { wanted[id] = 1; });
    (deadIds || []).forEach(function (id) { errorsWanted[id] = 1; });
    if (reading) { again = true; return; }
    reading = true;
    var swap = Object.keys(wanted), fill = Object.keys(errorsWanted);
    wanted = {}; errorsWanted = {};
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        swap.forEach(function (id) {
          var fresh = doc.getElementById(id);
          var old = document.getElementById(id);
          if (fresh && old) old.replaceWith(fresh);
        });
        // a dead letter that arrived live: its error as the overview shows it (masked by redact)
        fill.forEach(function (id) {
          var fresh = doc.querySelector('#dead tr[data-id="' + id + '"] .error-text');
          var cell = document.querySelector('#dead tr[data-id="' + id + '"] .error-text.pending');
          if (fresh && cell && fresh.textContent.trim()) {
            cell.textContent = fresh.textContent;
            cell.classList.remove("pending");
          }
        });
      })
      .catch(function () { /* the next change or reconnect reads again */ })
      .then(function () {
        var more = again;
        reading = again = false;
        var later = held;
        held = [];
        later.forEach(updateOverview);  // may begin a read itself, which then covers the requests too
        if (more && !reading) refreshSections([]);
      });
  }

  function updateEvent(msg) {
    var summary = document.getElementById("summary");
    var id = Number(summary.getAttribute("data-id"));
    msg.events.forEach(function (e) {
      if (e.id !== id) return;
      var st = document.getElementById("status");
      st.className = "badge " + e.status;
      st.textContent = e.status;
      var btn = summary.querySelector("button.replay");
      if (btn) btn.disabled = !TERMINAL[e.status];
      // the summary too: attempts, replays, last error, the dismissal (a replay clears it), the buttons
      refreshSections(["summary", "timeline", "calls", "actions"]);
    });
  }

  // A button's POST (the page's CSRF token, as the forms send it): ``ok`` runs on the expected status;
  // on anything else the button comes back, and the reason is shown.
  function post(button, action, expected, busy, idle, ok) {
    var id = button.getAttribute("data-id");
    button.disabled = true;
    button.textContent = busy;
    fetch("/admin/events/" + encodeURIComponent(id) + "/" + action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json", "X-CSRF-Token": csrf },
      body: "csrf_token=" + encodeURIComponent(csrf)
    }).then(function (r) {
      return r.json().then(function (body) {
        if (r.status !== expected) throw new Error(body.detail || ("HTTP " + r.status));
        ok();
      });
    }).catch(function (err) {
      button.disabled = false;
      button.textContent = idle;
      alert(idle + " failed: " + err.message);
    });
  }

  function replay(button) {
    post(button, "replay", 202, "Replaying…", "Replay", function () {
      button.textContent = "Replay queued";
    });
  }

  function dismiss(button) {
    // a dead letter's row (the overview, the dead letters page): dismissed, it leaves the list and the
    // dead counts, and the line under the overview's list counts it (the event page posts a form)
    post(button, "dismiss", 200, "Dismissing…", "Dismiss", function () {
      var row = button.closest("tr");
      var dead = row && row.parentNode;
      if (row) row.remove();
      var note = document.querySelector("#dead + .empty-note");
      if (note && dead) note.hidden = dead.rows.length > 0;
      refreshSections(["counts", "dismissed-note", "dead-more", "dead-count"]);
    });
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (t && t.matches && t.matches("button.replay")) replay(t);
    if (t && t.matches && t.matches("button.dismiss[data-id]")) dismiss(t);
  });

  if (page !== "overview" && page !== "event") return;
  // What a reconnect re-reads: changes made while no stream was open reached no one.
  var SECTIONS = page === "overview"
    ? ["counts", "last-hour", "events", "cost", "dead", "dead-empty", "dismissed-note", "dead-more"]
    : ["summary", "timeline", "calls", "actions"];
  var dropped = false;

  function setLive(text, cls) {
    var live = document.getElementById("live");
    if (live) { live.textContent = text; live.className = cls; }
  }

  function sessionEnded() {
    var live = document.getElementById("live");
    if (!live) return;
    live.textContent = "session ended: ";
    live.className = "live ended";
    live.appendChild(el("a", { href: "/admin/login" }, "sign in again"));
  }

  function connect() {
    var source = new EventSource("/admin/stream");
    source.addEventListener("hello", function () {
      // sent once the stream listens: a re-read now misses nothing the stream will not bring
      setLive("live", "live on");
      if (dropped) {
        dropped = false;
        refreshSections(SECTIONS);
        var img = document.getElementById("chart");
        if (img) { lastChart = Date.now(); img.src = "/admin/chart.svg?t=" + lastChart; }
      }
    });
    source.addEventListener("update", function (m) {
      var msg = JSON.parse(m.data);
      if (page !== "overview") updateEvent(msg);
      else if (reading) held.push(msg);
      else updateOverview(msg);
    });
    source.addEventListener("resync", function () { window.location.reload(); });
    source.onerror = function () {
      dropped = true;
      setLive("reconnecting…", "live");
      if (source.readyState !== EventSource.CLOSED) return;  // the browser reconnects by itself
      // it gave up (a 401, or an answer that is not a stream): signed out, or try again
      fetch("/admin/stream", { method: "HEAD", credentials: "same-origin" }).then(function (r) {
        if (r.status === 401) sessionEnded(); else setTimeout(connect, 2000);
      }, function () { setTimeout(connect, 2000); });
    };
  }

  connect();
})();
