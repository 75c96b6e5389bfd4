/* OLVM live updates: the bottom pane (and any job progress on the page) follows the
 * /ws/events/ websocket. Messages: {"type": "event.created", "event": {...}} and
 * {"type": "job.updated", "job": {...}}. No polling: on a lost connection the socket
 * reconnects with a growing delay; a reload always shows the truth from the database. */
(function () {
  "use strict";

  var configNode = document.getElementById("olvm-live-config");
  if (!configNode) return;
  var config = JSON.parse(configNode.textContent);
  if (!config) return;

  var indicator = document.getElementById("olvm-live");
  var eventsBody = document.getElementById("pane-events-body");
  var jobsBody = document.getElementById("pane-jobs-body");
  var newEventsBadge = document.getElementById("pane-events-new");
  var activeJobsBadge = document.getElementById("pane-jobs-active");
  var eventsTab = document.getElementById("pane-events-tab");
  var pane = document.getElementById("olvm-pane");
  var paneToggle = document.getElementById("olvm-pane-toggle");
  var unseen = 0;
  var delay = 1000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function shortTime(iso) {
    if (!iso) return "";
    var date = new Date(iso);
    if (isNaN(date.getTime())) return String(iso);
    return date.toISOString().slice(0, 19).replace("T", " ");
  }

  function url(kind, id) {
    var pattern = config.urls[kind];
    return pattern && id ? pattern.replace("{id}", id) : null;
  }

  function statusBadge(code, label) {
    var style = config.statusStyles[code] || ["secondary", "circle"];
    var badge = el("span", "badge text-bg-" + style[0] + (style[0] === "warning" ? " text-dark" : "") + " olvm-status");
    badge.dataset.status = code;
    badge.appendChild(el("i", "bi bi-" + style[1]));
    badge.appendChild(document.createTextNode(" " + (label || code.replace(/_/g, " ").replace(/^./, function (c) { return c.toUpperCase(); }))));
    return badge;
  }

  function progressBar(value, status) {
    value = Math.max(0, Math.min(100, parseInt(value, 10) || 0));
    var outer = el("div", "progress olvm-progress");
    outer.setAttribute("role", "progressbar");
    outer.setAttribute("aria-valuenow", value);
    outer.setAttribute("aria-valuemin", "0");
    outer.setAttribute("aria-valuemax", "100");
    var colour = { finished: "bg-success", failed: "bg-danger", aborted: "bg-secondary" }[status] || "";
    var inner = el("div", "progress-bar " + colour + (status === "started" ? " progress-bar-striped progress-bar-animated" : ""), value + "%");
    inner.style.width = value + "%";
    outer.appendChild(inner);
    return outer;
  }

  function flash(row) {
    row.classList.remove("olvm-flash");
    void row.offsetWidth;
    row.classList.add("olvm-flash");
  }

  function dropEmpty(body) {
    var empty = body.querySelector("tr.olvm-empty");
    if (empty) empty.remove();
  }

  // Events ---------------------------------------------------------------------------------
  function addEvent(event) {
    if (!eventsBody || !event || event.id === undefined) return;
    if (eventsBody.querySelector('tr[data-event-id="' + event.id + '"]')) return;
    dropEmpty(eventsBody);
    var style = config.severityStyles[event.severity] || ["secondary", "info-circle"];
    var row = el("tr");
    row.dataset.eventId = event.id;
    var icon = el("td", "text-center");
    var i = el("i", "bi bi-" + style[1] + " text-" + style[0]);
    i.title = event.severity || "";
    icon.appendChild(i);
    row.appendChild(icon);
    row.appendChild(el("td", "text-nowrap text-body-secondary", shortTime(event.time)));
    var message = el("td");
    var link = url(event.object_type, event.object_id);
    if (link) {
      var a = el("a", "link-body-emphasis", event.message);
      a.href = link;
      message.appendChild(a);
    } else {
      message.textContent = event.message || "";
    }
    row.appendChild(message);
    row.appendChild(el("td", "text-nowrap text-body-secondary", event.username || ""));
    eventsBody.insertBefore(row, eventsBody.firstChild);
    flash(row);
    while (eventsBody.rows.length > config.maxEvents) eventsBody.deleteRow(-1);
    if (!eventsTab.classList.contains("active") || (pane && pane.classList.contains("olvm-pane-collapsed"))) {
      unseen += 1;
      newEventsBadge.textContent = unseen;
      newEventsBadge.classList.remove("d-none");
    }
  }

  // Jobs -----------------------------------------------------------------------------------
  function jobRow(job) {
    var row = el("tr");
    row.dataset.jobId = job.id;
    row.appendChild(el("td", "text-nowrap"));
    var description = el("td");
    row.appendChild(description);
    row.appendChild(el("td"));
    row.appendChild(el("td", "text-nowrap text-body-secondary"));
    row.appendChild(el("td", "text-nowrap text-body-secondary"));
    return row;
  }

  function fillPaneJob(row, job) {
    var cells = row.cells;
    row.dataset.status = job.status;
    cells[0].replaceChildren(statusBadge(job.status));
    var a = el("a", "", job.description);
    a.href = url("job", job.id);
    cells[1].replaceChildren(a);
    if (job.error) cells[1].appendChild(el("span", "text-danger small", " — " + job.error.slice(0, 120)));
    cells[2].replaceChildren(progressBar(job.progress, job.status));
    cells[3].textContent = shortTime(job.started_at);
    cells[4].textContent = shortTime(job.ended_at);
  }

  function updateJob(job) {
    if (!job || !job.id) return;
    if (jobsBody) {
      var row = jobsBody.querySelector('tr[data-job-id="' + job.id + '"]');
      if (!row) {
        dropEmpty(jobsBody);
        row = jobRow(job);
        jobsBody.insertBefore(row, jobsBody.firstChild);
        while (jobsBody.rows.length > config.maxJobs) jobsBody.deleteRow(-1);
      }
      fillPaneJob(row, job);
      flash(row);
      var active = jobsBody.querySelectorAll('tr[data-status="started"]').length;
      activeJobsBadge.textContent = active;
      activeJobsBadge.classList.toggle("d-none", active === 0);
    }
    // Elsewhere on the page: the Tasks list rows and the job detail page.
    document.querySelectorAll('[data-job-id="' + job.id + '"]').forEach(function (node) {
      if (jobsBody && jobsBody.contains(node)) return;
      node.querySelectorAll(".olvm-progress").forEach(function (bar) {
        bar.replaceWith(progressBar(job.progress, job.status));
      });
      node.querySelectorAll(".olvm-status").forEach(function (badge) {
        badge.replaceWith(statusBadge(job.status));
      });
      (job.steps || []).forEach(function (step) {
        var stepRow = node.querySelector('[data-step="' + step.number + '"]');
        if (!stepRow) return;
        stepRow.querySelectorAll(".olvm-progress").forEach(function (bar) {
          bar.replaceWith(progressBar(step.progress, step.status));
        });
        stepRow.querySelectorAll(".olvm-status").forEach(function (badge) {
          badge.replaceWith(statusBadge(step.status));
        });
      });
      var error = node.querySelector("[data-job-error]");
      if (error && job.error) {
        error.textContent = job.error;
        error.classList.remove("d-none");
      }
    });
  }

  // The socket -------------------------------------------------------------------------------
  function setState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.querySelector(".olvm-live-text").textContent = text;
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + config.path);
    } catch (err) {
      setState("offline", "offline");
      return;
    }
    socket.onopen = function () {
      delay = 1000;
      setState("live", "live");
    };
    socket.onmessage = function (message) {
      var data;
      try {
        data = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (data.type === "event.created") addEvent(data.event);
      else if (data.type === "job.updated") updateJob(data.job);
    };
    socket.onclose = function (closed) {
      if (closed.code === 4403) {
        setState("offline", "not allowed");
        return;
      }
      setState("offline", "reconnecting…");
      window.setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }

  // The pane: remember whether it is collapsed; reset the unseen counter when shown.
  if (eventsTab) {
    eventsTab.addEventListener("shown.bs.tab", function () {
      unseen = 0;
      newEventsBadge.classList.add("d-none");
    });
  }
  if (pane && paneToggle) {
    var key = "olvm.pane.collapsed";
    var apply = function (collapsed) {
      pane.classList.toggle("olvm-pane-collapsed", collapsed);
      paneToggle.firstElementChild.className = collapsed ? "bi bi-chevron-up" : "bi bi-chevron-down";
    };
    apply(window.localStorage.getItem(key) === "1");
    paneToggle.addEventListener("click", function () {
      var collapsed = !pane.classList.contains("olvm-pane-collapsed");
      window.localStorage.setItem(key, collapsed ? "1" : "0");
      apply(collapsed);
      if (!collapsed && eventsTab.classList.contains("active")) {
        unseen = 0;
        newEventsBadge.classList.add("d-none");
      }
    });
  }

  connect();
})();
