/* OLVM live updates: one websocket per page (/ws/live/, protocol in portals/consumers.py).
 *
 * The page subscribes to what it shows: every element with data-live="vm.<id>" (host.<id>,
 * storage.<id>) — list rows and the object of a detail page — or data-subscribe="cluster.<id>"
 * (dashboard), plus the event and job streams of the bottom pane. Frames update, within the
 * element of their object (not inside a nested data-live element):
 *   [data-field=status|status_label|status_changed_at|status_detail|run_on_host_name|guest_ips|
 *    guest_hostname|guest_os|guest_kernel|total_bytes|free_bytes|committed_bytes|used_pct]
 *   [data-stat=cpu|memory|net]                (stats; charts.js hears "olvm:usage" / "olvm:storage")
 * the events pane (severity and object filter, kept in a cookie the server reads too), the
 * tasks pane and every [data-job-id] (progress bars), the dashboard's counts and capacity.
 * The VM portal uses it too, with a configuration of VM pages only (no panes).
 * No polling: a lost connection reconnects with a growing delay and sends the time of the
 * last frame it saw, so the engine replays what was missed. */
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
  var severitySelect = document.getElementById("pane-events-severity");
  var scopeSelect = document.getElementById("pane-events-scope");
  var running = {};
  (config.runningStatuses || []).forEach(function (code) { running[code] = true; });
  var unseen = 0;
  var delay = 1000;
  var socket = null;
  var lastTs = null; // the engine's time of the newest frame seen: where a catch-up starts
  var subscribed = {};
  var connections = 0;

  // Helpers --------------------------------------------------------------------------------
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

  function statusLabel(code) {
    return (config.statusLabels || {})[code] || String(code || "").replace(/_/g, " ").replace(/^./, function (c) { return c.toUpperCase(); });
  }

  function statusBadge(code, label) {
    var style = config.statusStyles[code] || ["secondary", "circle"];
    var badge = el("span", "badge text-bg-" + style[0] + (style[0] === "warning" ? " text-dark" : "") + " olvm-status");
    badge.dataset.status = code;
    badge.appendChild(el("i", "bi bi-" + style[1]));
    badge.appendChild(document.createTextNode(" " + (label || statusLabel(code))));
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

  // The same texts as portals/templatetags/olvm.py.
  function percentText(value) {
    if (value === null || value === undefined) return "—";
    return value < 10 ? value.toFixed(1) + " %" : Math.round(value) + " %";
  }

  function rateText(value) {
    if (value === null || value === undefined) return "—";
    var units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit === 0 || value >= 100 ? Math.round(value) : value.toFixed(1)) + " " + units[unit];
  }

  function gib(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    var number = Number(bytes);
    var unit = 0;
    while (number >= 1024 && unit < units.length - 1) { number /= 1024; unit += 1; }
    return (unit ? number.toFixed(1).replace(/\.0$/, "") : String(bytes)) + " " + units[unit];
  }

  function mib(value) {
    value = Number(value) || 0;
    if (value >= 1024 * 1024) return (value / (1024 * 1024)).toFixed(1).replace(/\.0$/, "") + " TiB";
    if (value >= 1024) return (value / 1024).toFixed(1).replace(/\.0$/, "") + " GiB";
    return value + " MiB";
  }

  // The elements of one object: [data-live=key]; their fields are the [data-field] / [data-stat]
  // elements whose nearest data-live ancestor is that element (a host page's VM rows are theirs).
  function containers(key) {
    return document.querySelectorAll('[data-live="' + key + '"]');
  }

  function owned(container, selector) {
    return Array.prototype.filter.call(container.querySelectorAll(selector), function (node) {
      return node.closest("[data-live]") === container;
    });
  }

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  // Object fields ----------------------------------------------------------------------------
  // name -> [the payload key it needs, how it is drawn]
  var FIELDS = {
    status: ["status", function (node, obj) { node.replaceChildren(statusBadge(obj.status)); }],
    status_label: ["status", function (node, obj) { node.textContent = statusLabel(obj.status); }],
    status_changed_at: ["status_changed_at", function (node, obj) {
      node.textContent = obj.status_changed_at ? "since " + shortTime(obj.status_changed_at) : "";
    }],
    status_detail: ["status_detail", function (node, obj) {
      var text = node.querySelector("span") || node;
      text.textContent = obj.status_detail || "";
      node.classList.toggle("d-none", !obj.status_detail);
    }],
    run_on_host_name: ["run_on_host", function (node, obj) {
      var link = url("host", obj.run_on_host);
      if (!link) { node.textContent = "—"; return; }
      var a = el("a", "", obj.run_on_host_name || obj.run_on_host);
      a.href = link;
      node.replaceChildren(a);
    }],
    guest_ips: ["guest_ips", function (node, obj) {
      var ips = obj.guest_ips || [];
      if (node.dataset.format === "codes") {
        node.replaceChildren();
        ips.forEach(function (ip) { node.appendChild(el("code", "", ip)); node.appendChild(document.createTextNode(" ")); });
        if (!ips.length) node.textContent = "—";
      } else {
        node.textContent = ips.slice(0, 3).join(", ");
      }
    }],
    guest_hostname: ["guest_hostname", function (node, obj) { node.textContent = obj.guest_hostname || "—"; }],
    guest_os: ["guest_os", function (node, obj) { node.textContent = obj.guest_os || ""; }],
    guest_kernel: ["guest_kernel", function (node, obj) { node.textContent = obj.guest_kernel || "—"; }],
    total_bytes: ["total_bytes", function (node, obj) { node.textContent = gib(obj.total_bytes); }],
    free_bytes: ["free_bytes", function (node, obj) { node.textContent = gib(obj.free_bytes); }],
    committed_bytes: ["committed_bytes", function (node, obj) { node.textContent = gib(obj.committed_bytes); }],
    used_pct: ["used_bytes", function (node, obj) {
      var pct = obj.total_bytes ? Math.max(0, Math.round((100 * obj.used_bytes) / obj.total_bytes)) : 0;
      node.replaceChildren(progressBar(pct, "finished"));
    }],
  };

  function applyObject(key, obj) {
    containers(key).forEach(function (container) {
      var changed = false;
      owned(container, "[data-field]").forEach(function (node) {
        var field = FIELDS[node.dataset.field];
        if (field && Object.prototype.hasOwnProperty.call(obj, field[0])) {
          var before = node.textContent;
          field[1](node, obj);
          changed = changed || node.textContent !== before; // a replayed state changes nothing: no flash
        }
      });
      if (changed && container.tagName === "TR") flash(container);
    });
  }

  // A running migration's figures on its VM's page; hidden once the VM is no longer migrating.
  function showMigration(m) {
    document.querySelectorAll('[data-vm-migration="' + m.id + '"]').forEach(function (node) {
      var mib = function (bytes) { return Math.round((bytes || 0) / 1048576); };
      var text = "Migrating to " + (m.target || "another host") + ": " + (m.progress || 0) + "%";
      if (m.data_total) text += " (" + mib(m.data_processed) + " of " + mib(m.data_total) + " MiB";
      if (m.data_total && m.memory_bps) text += ", " + mib(m.memory_bps) + " MiB/s";
      if (m.data_total) text += ")";
      node.querySelector("[data-migration-text]").textContent = text;
      var bar = node.querySelector(".progress-bar");
      if (bar) { bar.style.width = (m.progress || 0) + "%"; bar.setAttribute("aria-valuenow", m.progress || 0); }
      node.classList.remove("d-none");
    });
  }

  function applyVmActions(vm) {
    if (vm.status) {
      document.querySelectorAll('[data-vm-migration="' + vm.id + '"]').forEach(function (node) {
        node.classList.toggle("d-none", vm.status !== "migrating");
      });
    }
    var page = config.pageObject;
    var statesNode = document.getElementById("olvm-vm-action-states");
    if (!page || page.kind !== "vm" || page.id !== vm.id || !statesNode || !vm.status) return;
    var states = JSON.parse(statesNode.textContent);
    document.querySelectorAll("[data-vm-actions] [data-action]").forEach(function (node) {
      var allowed = (states[node.dataset.action] || []).indexOf(vm.status) >= 0;
      if (node.tagName === "A") {
        node.classList.toggle("disabled", !allowed);
        if (allowed) { node.removeAttribute("aria-disabled"); node.removeAttribute("tabindex"); }
        else { node.setAttribute("aria-disabled", "true"); node.setAttribute("tabindex", "-1"); }
      } else {
        node.disabled = !allowed;
      }
    });
  }

  // Stats --------------------------------------------------------------------------------------
  var counters = {}; // VM id -> the previous counters, when the engine sent no rates
  function hostUsage(sample) {
    var cpu = sample.cpu_pct, memory = sample.mem_pct;
    if (cpu === undefined || cpu === null) {
      var c = sample.cpu || {};
      if (c.user_pct !== undefined || c.system_pct !== undefined) cpu = Math.min(100, (c.user_pct || 0) + (c.system_pct || 0));
    }
    if (memory === undefined || memory === null) {
      var m = sample.memory || {};
      if (m.total_mib) memory = Math.min(100, (100 * (m.used_mib || 0)) / m.total_mib);
    }
    return { cpu: cpu, memory: memory, net_rx: sample.net_rx_bps, net_tx: sample.net_tx_bps };
  }

  function vmUsage(sample) {
    var usage = { cpu: sample.cpu_pct, memory: sample.mem_pct, net_rx: sample.net_rx_bps, net_tx: sample.net_tx_bps };
    if (usage.cpu === undefined) { // an engine that sends counters only: rates from the previous sample
      var rx = 0, tx = 0;
      (sample.nics || []).forEach(function (n) { rx += n.rx_bytes || 0; tx += n.tx_bytes || 0; });
      var before = counters[sample.id];
      var now = { at: sample.at, cpu: sample.cpu_time_ns, rx: rx, tx: tx };
      counters[sample.id] = now;
      usage.cpu = usage.net_rx = usage.net_tx = null;
      if (before && now.at > before.at) {
        var dt = now.at - before.at;
        if (now.cpu >= before.cpu) usage.cpu = Math.min(100, (now.cpu - before.cpu) / (dt * 1e7 * (sample.vcpus || 1)));
        if (now.rx >= before.rx) usage.net_rx = (now.rx - before.rx) / dt;
        if (now.tx >= before.tx) usage.net_tx = (now.tx - before.tx) / dt;
      }
      var held = sample.rss_kib || sample.balloon_kib;
      usage.memory = sample.memory_kib && held ? Math.min(100, (100 * held) / sample.memory_kib) : null;
    }
    return usage;
  }

  function applyUsage(key, at, usage) {
    containers(key).forEach(function (container) {
      owned(container, "[data-stat]").forEach(function (node) {
        var stat = node.dataset.stat;
        if (stat === "net") {
          if (usage.net_rx === null && usage.net_tx === null) { node.textContent = "—"; return; }
          node.replaceChildren(
            el("i", "bi bi-arrow-down-short"), document.createTextNode(rateText(usage.net_rx) + " "),
            el("i", "bi bi-arrow-up-short"), document.createTextNode(rateText(usage.net_tx))
          );
        } else {
          var value = usage[stat];
          node.textContent = percentText(value === undefined ? null : value);
        }
      });
    });
    emit("olvm:usage", { key: key, at: at, usage: usage });
  }

  function applyStats(frame) {
    if (frame.host) applyUsage("host." + frame.id, frame.at, hostUsage(frame.host));
    (frame.vms || []).forEach(function (sample) {
      applyUsage("vm." + sample.id, sample.at || frame.at, vmUsage(sample));
    });
  }

  // Dashboard ------------------------------------------------------------------------------------
  var refreshTimer = null;
  function dashboard() {
    return document.getElementById("dashboard-live");
  }

  function refreshDashboard(wait) {
    if (!dashboard() || refreshTimer) return;
    refreshTimer = window.setTimeout(function () {
      refreshTimer = null;
      var current = dashboard();
      if (!current) return;
      fetch(current.dataset.refreshUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.querySelector("#dashboard-live");
          if (fresh) { dashboard().replaceWith(fresh); resubscribe(); }
        })
        .catch(function () { /* the next change or reconnect tries again */ });
    }, wait === undefined ? 1000 : wait);
  }

  function bump(name, by) {
    var node = dashboard().querySelector('[data-count="' + name + '"]');
    var parts = /^(vm|host):(.+)$/.exec(name);
    if (!node && parts && by > 0) node = statusCount(parts[1], parts[2]);
    if (!node) { refreshDashboard(); return; }
    var count = Math.max(0, (parseInt(node.textContent, 10) || 0) + by);
    node.textContent = count;
    if (parts) node.parentNode.classList.toggle("d-none", count === 0); // as drawn: statuses with none are left out
  }

  // A status the counts did not show yet: its badge, linking to the list filtered by it.
  function statusCount(kind, code) {
    var box = dashboard().querySelector('[data-status-counts="' + kind + '"]');
    if (!box) return null;
    var empty = box.querySelector("[data-empty]");
    if (empty) empty.remove();
    var link = el("a", "me-2 text-decoration-none");
    link.href = box.dataset.listUrl + "?status=" + encodeURIComponent(code);
    link.appendChild(statusBadge(code));
    link.appendChild(document.createTextNode(" "));
    var count = el("span", "fw-semibold text-body", "0");
    count.dataset.count = kind + ":" + code;
    link.appendChild(count);
    box.appendChild(link);
    return count;
  }

  function capacityRow(clusterId) {
    return dashboard().querySelector('[data-capacity="' + clusterId + '"]');
  }

  function addTo(row, name, by) {
    row.dataset[name] = Math.max(0, (Number(row.dataset[name]) || 0) + by);
    return Number(row.dataset[name]);
  }

  function drawCapacity(row) {
    var d = row.dataset;
    var pct = function (part, whole) { return Number(whole) ? Math.max(0, Math.round((100 * Number(part)) / Number(whole))) : 0; };
    var bar = function (cell, value, calm) {
      var inner = cell.querySelector(".progress-bar");
      cell.querySelector(".progress").setAttribute("aria-valuenow", value);
      inner.style.width = value + "%";
      inner.className = "progress-bar " + (value >= 90 ? "bg-danger" : value >= 70 ? "bg-warning" : calm);
    };
    row.querySelector('[data-cap="hosts"]').textContent = d.hostsUp + " / " + d.hostCount;
    row.querySelector('[data-cap="vms"]').textContent = d.vmsRunning + " / " + d.vmCount;
    var memory = row.querySelector('[data-cap="memory"]');
    var mem = pct(d.vmMemory, d.hostMemory);
    bar(memory, mem, "bg-success");
    memory.querySelector(".small").textContent = mib(d.vmMemory) + " of " + mib(d.hostMemory) + (Number(d.hostMemory) ? " (" + mem + " %)" : "");
    var cpuCell = row.querySelector('[data-cap="cpu"]');
    bar(cpuCell, pct(d.vmVcpus, d.hostThreads), "bg-info");
    cpuCell.querySelector(".small").textContent = d.vmVcpus + " vCPUs on " + d.hostThreads + " threads";
  }

  function dashboardVm(vm, previous) {
    if (!dashboard() || !previous || previous.status === vm.status) return; // a replayed state: see refreshDashboard
    bump("vm:" + previous.status, -1);
    bump("vm:" + vm.status, 1);
    var was = !!running[previous.status], is = !!running[vm.status];
    if (was === is) return;
    var by = is ? 1 : -1;
    bump("vms-running", by);
    var row = capacityRow(vm.cluster);
    if (!row) { refreshDashboard(); return; }
    addTo(row, "vmsRunning", by);
    addTo(row, "vmMemory", by * (vm.memory_mib || 0));
    addTo(row, "vmVcpus", by * (vm.vcpus || 0));
    drawCapacity(row);
  }

  function dashboardHost(host, previous) {
    if (!dashboard() || !previous || previous.status === host.status) return;
    bump("host:" + previous.status, -1);
    bump("host:" + host.status, 1);
    var was = previous.status === "up", is = host.status === "up";
    if (was === is) return;
    var by = is ? 1 : -1;
    bump("hosts-up", by);
    var row = capacityRow(host.cluster);
    if (!row) { refreshDashboard(); return; }
    addTo(row, "hostsUp", by);
    addTo(row, "hostMemory", by * (host.memory_mib || 0));
    addTo(row, "hostThreads", by * (host.cpu_threads || 0));
    drawCapacity(row);
  }

  // Events pane --------------------------------------------------------------------------------
  var paneFilter = { severity: (config.paneFilter || {}).severity || "", scope: (config.paneFilter || {}).scope || "" };

  function passes(event) {
    var order = config.severityOrder || [];
    if (paneFilter.severity && order.indexOf(event.severity) < order.indexOf(paneFilter.severity)) return false;
    if (paneFilter.scope === "page") {
      var page = config.pageObject;
      if (!page) return true;
      return String(event[config.pageObjectFields[page.kind]]) === page.id;
    }
    return !paneFilter.scope || event.object_type === paneFilter.scope;
  }

  function addEvent(event) {
    if (!event || event.id === undefined) return;
    if (dashboard() && /ADD|REMOVE|EXTERNAL/.test(event.code || "")) refreshDashboard();
    if (!eventsBody || !passes(event)) return;
    if (eventsBody.querySelector('tr[data-event-id="' + event.id + '"]')) return;
    dropEmpty(eventsBody);
    var style = config.severityStyles[event.severity] || ["secondary", "info-circle"];
    var row = el("tr");
    row.dataset.eventId = event.id;
    row.dataset.severity = event.severity || "";
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
    // Newest first: a replayed event goes where its time puts it.
    var before = null;
    Array.prototype.some.call(eventsBody.rows, function (other) {
      var time = other.cells.length > 1 ? other.cells[1].textContent : "";
      if (time && time <= shortTime(event.time)) { before = other; return true; }
      return false;
    });
    eventsBody.insertBefore(row, before);
    flash(row);
    while (eventsBody.rows.length > config.maxEvents) eventsBody.deleteRow(-1);
    if (!eventsTab.classList.contains("active") || (pane && pane.classList.contains("olvm-pane-collapsed"))) {
      unseen += 1;
      newEventsBadge.textContent = unseen;
      newEventsBadge.classList.remove("d-none");
    }
  }

  function changePaneFilter() {
    paneFilter = { severity: severitySelect.value, scope: scopeSelect.value };
    var value = encodeURIComponent(paneFilter.severity + "|" + paneFilter.scope);
    document.cookie = config.paneFilterCookie + "=" + value + "; path=/; max-age=31536000; SameSite=Lax";
    var query = "?severity=" + encodeURIComponent(paneFilter.severity) + "&scope=" + encodeURIComponent(paneFilter.scope);
    if (config.pageObject) query += "&page=" + encodeURIComponent(config.pageObject.kind + ":" + config.pageObject.id);
    fetch(config.paneEventsUrl + query, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        eventsBody.innerHTML = html;
        unseen = 0;
        newEventsBadge.classList.add("d-none");
      })
      .catch(function () { /* the rows stay as they were */ });
  }

  if (severitySelect && scopeSelect && eventsBody) {
    severitySelect.addEventListener("change", changePaneFilter);
    scopeSelect.addEventListener("change", changePaneFilter);
  }

  // Jobs -----------------------------------------------------------------------------------------
  function jobRow(job) {
    var row = el("tr");
    row.dataset.jobId = job.id;
    row.appendChild(el("td", "text-nowrap"));
    row.appendChild(el("td"));
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
      var before = row.textContent;
      fillPaneJob(row, job);
      if (row.textContent !== before) flash(row);
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

  // The socket -------------------------------------------------------------------------------------
  function setState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.querySelector(".olvm-live-text").textContent = text;
  }

  function wanted() {
    var keys = {};
    if (eventsBody) keys.events = true;
    if (jobsBody) keys.jobs = true;
    document.querySelectorAll("[data-live], [data-subscribe]").forEach(function (node) {
      var key = node.dataset.live || node.dataset.subscribe;
      if (key) keys[key] = true;
    });
    return Object.keys(keys);
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  // What the page shows now (after a fragment was replaced): subscribe the new, drop the gone.
  function resubscribe() {
    var now = {};
    wanted().forEach(function (key) { now[key] = true; });
    var added = Object.keys(now).filter(function (key) { return !subscribed[key]; });
    var gone = Object.keys(subscribed).filter(function (key) { return !now[key]; });
    subscribed = now;
    if (gone.length) send({ unsubscribe: gone });
    if (added.length) send({ subscribe: added });
  }

  var handlers = {
    "event.created": function (frame) { addEvent(frame.event); },
    "job.updated": function (frame) { updateJob(frame.job); },
    "vm.status": function (frame) {
      applyObject("vm." + frame.vm.id, frame.vm);
      applyVmActions(frame.vm);
      dashboardVm(frame.vm, frame.previous);
    },
    "vm.guest": function (frame) { applyObject("vm." + frame.vm.id, frame.vm); },
    "vm.migration": function (frame) { showMigration(frame.migration); },
    "host.status": function (frame) {
      applyObject("host." + frame.host.id, frame.host);
      dashboardHost(frame.host, frame.previous);
    },
    "storage.status": function (frame) {
      applyObject("storage." + frame.storage_domain.id, frame.storage_domain);
      emit("olvm:storage", { key: "storage." + frame.storage_domain.id, storage_domain: frame.storage_domain });
    },
    "host.stats": applyStats,
    "caught_up": function () {
      if (indicator) indicator.dataset.synced = "true"; // subscribed and caught up (the browser tests wait for it)
      if (connections > 1) refreshDashboard(0);
    },
    "resync": function () {
      if (dashboard()) { refreshDashboard(0); return; }
      setState("stale", "reload for changes");
      if (indicator) { indicator.style.cursor = "pointer"; indicator.onclick = function () { window.location.reload(); }; }
    },
    "error": function (frame) {
      if (window.console) window.console.warn("live:", frame.error, frame.subscription || "", frame.detail || "");
    },
  };

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    try {
      socket = new WebSocket(scheme + window.location.host + config.path);
    } catch (err) {
      setState("offline", "offline");
      return;
    }
    socket.onopen = function () {
      delay = 1000;
      connections += 1;
      setState("live", "live");
      subscribed = {};
      wanted().forEach(function (key) { subscribed[key] = true; });
      // The first connection catches up from when the page was drawn, later ones from the last frame.
      send({ subscribe: Object.keys(subscribed), since: lastTs || config.renderedAt });
    };
    socket.onmessage = function (message) {
      var frame;
      try {
        frame = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (frame.ts && (!lastTs || frame.ts > lastTs)) lastTs = frame.ts;
      var handle = handlers[frame.type];
      if (handle) handle(frame);
    };
    socket.onclose = function (closed) {
      socket = null;
      if (indicator) delete indicator.dataset.synced;
      if (closed.code === 4401 || closed.code === 4403) {
        setState("offline", closed.code === 4401 ? "signed out" : "not allowed");
        return;
      }
      setState("offline", "reconnecting…");
      window.setTimeout(connect, delay + Math.random() * 500);
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

  // htmx swaps the tab body of a detail page: subscribe to the rows it brought.
  document.body.addEventListener("htmx:afterSettle", resubscribe);

  window.OLVM_LIVE = { resubscribe: resubscribe };
  connect();
})();
