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
    tr.appendChild(el("td", { "class": "error-text" }, ""));
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
      }
    });
    var note = document.querySelector("#dead + .empty-note");
    if (note) note.hidden = dead.rows.length > 0;
    if (msg.counts) {
      document.querySelectorAll("#counts .n[data-status]").forEach(function (n) {
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

  var refreshes = 0;

  function refreshSections(ids) {
    // re-read this page and swap in its sections; an answer overtaken by a later request is dropped
    var mine = ++refreshes;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        if (mine !== refreshes) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var fresh = doc.getElementById(id);
          var old = document.getElementById(id);
          if (fresh && old) old.replaceWith(fresh);
        });
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

  function replay(button) {
    var id = button.getAttribute("data-id");
    button.disabled = true;
    button.textContent = "Replaying…";
    fetch("/admin/events/" + encodeURIComponent(id) + "/replay", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json", "X-CSRF-Token": csrf },
      body: "csrf_token=" + encodeURIComponent(csrf)
    }).then(function (r) {
      return r.json().then(function (body) {
        if (r.status !== 202) throw new Error(body.detail || ("HTTP " + r.status));
        button.textContent = "Replay queued";
      });
    }).catch(function (err) {
      button.disabled = false;
      button.textContent = "Replay";
      alert("Replay failed: " + err.message);
    });
  }

  function dismiss(button) {
    // a dead letter's row on the overview: dismissed, it leaves the list and the dead count, and the
    // line under the list counts it (the event page posts a form)
    var id = button.getAttribute("data-id");
    button.disabled = true;
    button.textContent = "Dismissing…";
    fetch("/admin/events/" + encodeURIComponent(id) + "/dismiss", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json", "X-CSRF-Token": csrf },
      body: "csrf_token=" + encodeURIComponent(csrf)
    }).then(function (r) {
      return r.json().then(function (body) {
        if (r.status !== 200) throw new Error(body.detail || ("HTTP " + r.status));
        var row = button.closest("tr");
        var dead = row && row.parentNode;
        if (row) row.remove();
        var note = document.querySelector("#dead + .empty-note");
        if (note && dead) note.hidden = dead.rows.length > 0;
        refreshSections(["counts", "dismissed-note"]);
      });
    }).catch(function (err) {
      button.disabled = false;
      button.textContent = "Dismiss";
      alert("Dismiss failed: " + err.message);
    });
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (t && t.matches && t.matches("button.replay")) replay(t);
    if (t && t.matches && t.matches("button.dismiss[data-id]")) dismiss(t);
  });

  if (page !== "overview" && page !== "event") return;
  var live = document.getElementById("live");
  var source = new EventSource("/admin/stream");
  source.addEventListener("hello", function () { if (live) { live.textContent = "live"; live.className = "live on"; } });
  source.addEventListener("update", function (m) {
    var msg = JSON.parse(m.data);
    if (page === "overview") updateOverview(msg); else updateEvent(msg);
  });
  source.addEventListener("resync", function () { window.location.reload(); });
  source.onerror = function () { if (live) { live.textContent = "reconnecting…"; live.className = "live"; } };
})();
