/* Monitoring charts of the host, VM and storage domain pages (Chart.js from npm).
 *
 * A section.olvm-monitoring names its series (data-history-url: the REST API's
 * /<objects>/<id>/history/) and kind (data-chart-kind: "usage" = CPU and memory % plus network
 * B/s, "space" = free and used bytes). The chosen range (1 hour to 30 days) is read once from
 * the API: the samples of the last hour, 5-minute averages before. While the range is the last
 * hour, live.js's stats ("olvm:usage") and storage changes ("olvm:storage") extend the lines. */
(function () {
  "use strict";

  if (!window.Chart) return;

  var HOUR = 3600;

  function rate(value) {
    var units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit === 0 || value >= 100 ? Math.round(value) : value.toFixed(1)) + " " + units[unit];
  }

  function bytes(value) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1).replace(/\.0$/, "") : String(value)) + " " + units[unit];
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function timeLabel(range) {
    return function (value) {
      var d = new Date(value);
      var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
      return range > 86400 ? pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm : hm;
    };
  }

  function line(label, colour) {
    return { label: label, data: [], borderColor: colour, backgroundColor: colour, borderWidth: 1.5, pointRadius: 0, tension: 0.2, spanGaps: false };
  }

  function chart(canvas, datasets, yTick, yMax) {
    return new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: { type: "linear", ticks: { maxTicksLimit: 8, callback: timeLabel(HOUR) } },
          y: { min: 0, max: yMax, ticks: { callback: yTick } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: {
            callbacks: {
              title: function (items) { return items.length ? new Date(items[0].parsed.x).toLocaleString() : ""; },
              label: function (item) { return item.dataset.label + ": " + yTick(item.parsed.y); },
            },
          },
        },
      },
    });
  }

  function Monitor(section) {
    this.section = section;
    this.url = section.dataset.historyUrl;
    this.kind = section.dataset.chartKind;
    var owner = section.closest("[data-live]");
    this.key = owner ? owner.dataset.live : null;
    this.range = HOUR;
    this.note = section.querySelector("[data-chart-note]");
    this.charts = [];
    if (this.kind === "space") {
      this.space = chart(section.querySelector('canvas[data-chart="space"]'), [line("Free", "#198754"), line("Used", "#6c757d")], bytes);
      this.charts = [this.space];
    } else {
      this.usage = chart(section.querySelector('canvas[data-chart="usage"]'), [line("CPU", "#0d6efd"), line("Memory", "#fd7e14")], function (v) { return Math.round(v) + " %"; }, 100);
      this.network = chart(section.querySelector('canvas[data-chart="network"]'), [line("Received", "#20c997"), line("Sent", "#6f42c1")], rate);
      this.charts = [this.usage, this.network];
    }
    var self = this;
    section.querySelectorAll("[data-range]").forEach(function (button) {
      button.addEventListener("click", function () {
        section.querySelectorAll("[data-range]").forEach(function (other) { other.classList.toggle("active", other === button); });
        self.range = parseInt(button.dataset.range, 10) || HOUR;
        self.load();
      });
    });
    this.load();
  }

  Monitor.prototype.series = function () {
    return this.kind === "space" ? this.space.data.datasets : this.usage.data.datasets.concat(this.network.data.datasets);
  };

  Monitor.prototype.load = function () {
    var self = this;
    var since = new Date(Date.now() - this.range * 1000).toISOString();
    var metrics = this.kind === "space" ? "free,total" : "cpu,memory,net_rx,net_tx";
    fetch(this.url + "?metric=" + metrics + "&since=" + encodeURIComponent(since), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) { self.draw(body.points); })
      .catch(function () { if (self.note) self.note.textContent = "The history could not be read."; });
  };

  Monitor.prototype.draw = function (points) {
    var sets = this.series();
    sets.forEach(function (set) { set.data = []; });
    points.forEach(function (point) {
      var x = Date.parse(point[0]);
      if (this.kind === "space") {
        var free = point[1], total = point[2];
        if (free !== null) sets[0].data.push({ x: x, y: free });
        if (free !== null && total !== null) sets[1].data.push({ x: x, y: total - free });
      } else {
        for (var i = 0; i < 4; i += 1) {
          if (point[i + 1] !== null) sets[i].data.push({ x: x, y: point[i + 1] });
        }
      }
    }, this);
    var range = this.range;
    this.charts.forEach(function (c) {
      c.options.scales.x.min = Date.now() - range * 1000;
      c.options.scales.x.max = Date.now();
      c.options.scales.x.ticks.callback = timeLabel(range);
      c.update("none");
    });
    if (this.note) {
      this.note.textContent = points.length
        ? points.length + " points" + (range > HOUR ? "; 5-minute averages beyond the last hour." : ".")
        : "No samples in this period yet.";
    }
  };

  // A live point (only while the chart shows the last hour).
  Monitor.prototype.push = function (x, values) {
    if (this.range !== HOUR) return;
    var horizon = Date.now() - this.range * 1000;
    this.series().forEach(function (set, i) {
      if (values[i] !== null && values[i] !== undefined) set.data.push({ x: x, y: values[i] });
      while (set.data.length && set.data[0].x < horizon) set.data.shift();
    });
    this.charts.forEach(function (c) {
      c.options.scales.x.min = horizon;
      c.options.scales.x.max = Math.max(Date.now(), x);
      c.update("none");
    });
  };

  Monitor.prototype.alive = function () {
    return document.body.contains(this.section);
  };

  Monitor.prototype.destroy = function () {
    this.charts.forEach(function (c) { c.destroy(); });
  };

  var monitors = [];

  function start() {
    monitors = monitors.filter(function (m) {
      if (m.alive()) return true;
      m.destroy();
      return false;
    });
    document.querySelectorAll("section.olvm-monitoring").forEach(function (section) {
      if (section.dataset.chartsReady) return;
      section.dataset.chartsReady = "1";
      monitors.push(new Monitor(section));
    });
  }

  document.addEventListener("olvm:usage", function (event) {
    var d = event.detail;
    monitors.forEach(function (m) {
      if (m.kind !== "usage" || m.key !== d.key) return;
      var u = d.usage;
      m.push(d.at ? d.at * 1000 : Date.now(), [u.cpu, u.memory, u.net_rx, u.net_tx]);
    });
  });

  document.addEventListener("olvm:storage", function (event) {
    var sd = event.detail.storage_domain;
    monitors.forEach(function (m) {
      if (m.kind !== "space" || m.key !== event.detail.key) return;
      m.push(Date.now(), [sd.free_bytes, sd.total_bytes - sd.free_bytes]);
    });
  });

  // htmx swaps the tab body of a detail page: the general tab brings its charts back.
  document.body.addEventListener("htmx:afterSettle", start);
  start();
})();
