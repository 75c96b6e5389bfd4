/* OLVM console page: a VM's serial console in xterm.js, or its VNC display in noVNC.
 *
 * 1. POST config.ticketUrl ({"kind": "serial" | "vnc"}, CSRF token from the page) for a
 *    one-time ticket; the answer names the websocket to open (`url`).
 * 2. Open it: binary frames carry the console's bytes both ways (RFB for noVNC); text
 *    frames from the engine are JSON status messages: {"type": "status", "state":
 *    "connected", ...} and {"type": "closed", "code": ..., "reason": ...}.
 * 3. Show the state: connecting, connected, closed with the reason. "Reconnect" asks for a
 *    new ticket (a ticket is good once). */
(function () {
  "use strict";

  var configNode = document.getElementById("olvm-console-config");
  var screen = document.getElementById("olvm-console-screen");
  var statusNode = document.getElementById("olvm-console-status");
  var reconnectButton = document.getElementById("olvm-console-reconnect");
  var cadButton = document.getElementById("olvm-console-cad");
  var rfbUrl = document.currentScript && document.currentScript.dataset.rfb;
  if (!configNode || !screen || !statusNode) return;
  var config = JSON.parse(configNode.textContent);
  var session = null;
  var generation = 0; // bumped by every connect(): events of older sockets are ignored

  var STYLES = { connecting: "info", connected: "success", closed: "secondary", error: "danger" };
  var CLOSE_REASONS = {
    1000: "The console stream ended.",
    1006: "The engine refused the connection (an expired or used ticket) or the connection was lost.",
    4403: "The engine refused the console (the ticket was expired, used, or not yours).",
    4408: "Closed for inactivity.",
    4409: "The VM has no console now.",
    4410: "Another session of yours opened this console.",
    4502: "The host agent refused or lost the console."
  };

  function setStatus(state, text) {
    statusNode.dataset.state = state;
    statusNode.className = "alert alert-" + (STYLES[state] || "secondary") + " py-1 px-2 small mb-2";
    statusNode.textContent = text;
    if (reconnectButton) reconnectButton.disabled = state === "connecting" || state === "connected";
    if (cadButton) cadButton.disabled = state !== "connected";
  }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function requestTicket() {
    return fetch(config.ticketUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ kind: config.kind })
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) {
          var detail = body.detail || (body.kind && body.kind.join(" "));
          throw new Error(detail || "The engine refused the console (HTTP " + response.status + ").");
        }
        return body;
      });
    });
  }

  /* The websocket of one session, with the engine's status messages and its close. */
  function openSocket(url, onOpenStream) {
    var mine = generation;
    var socket = new WebSocket(url);
    var closedReason = null;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", function (event) {
      if (typeof event.data !== "string" || mine !== generation) return;
      var message;
      try { message = JSON.parse(event.data); } catch (err) { return; }
      if (message.type === "status" && message.state === "connected") {
        onOpenStream(message);
      } else if (message.type === "closed") {
        closedReason = message.reason;
      }
    });
    socket.addEventListener("close", function (event) {
      if (mine !== generation) return; // an older session, replaced
      var reason = closedReason || event.reason || CLOSE_REASONS[event.code] || "Closed (code " + event.code + ").";
      setStatus(event.code === 1000 || event.code === 4408 || event.code === 4410 ? "closed" : "error", "Closed: " + reason);
    });
    return socket;
  }

  function openSerial(url) {
    var term = new window.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, fontFamily: "monospace" });
    var fit = new window.FitAddon.FitAddon();
    var encoder = new TextEncoder();
    screen.replaceChildren();
    term.loadAddon(fit);
    term.open(screen);
    fit.fit();
    var socket = openSocket(url, function (message) {
      setStatus("connected", "Connected to the serial console of VM " + message.vm + " on host " + message.host +
        ". Press Enter for a prompt.");
      term.focus();
    });
    socket.addEventListener("message", function (event) {
      if (typeof event.data !== "string") term.write(new Uint8Array(event.data));
    });
    function send(bytes) {
      if (socket.readyState === WebSocket.OPEN) socket.send(bytes);
    }
    term.onData(function (data) { send(encoder.encode(data)); });
    term.onBinary(function (data) {
      var bytes = new Uint8Array(data.length);
      for (var i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 255;
      send(bytes);
    });
    function onResize() { fit.fit(); }
    window.addEventListener("resize", onResize);
    // The screen also changes size without the window (the admin portal's bottom pane opened or
    // collapsed): refit the terminal to it.
    var observer = window.ResizeObserver ? new ResizeObserver(onResize) : null;
    if (observer) observer.observe(screen);
    return {
      socket: socket,
      close: function () {
        window.removeEventListener("resize", onResize);
        if (observer) observer.disconnect();
        socket.close();
        term.dispose();
      }
    };
  }

  function openVnc(url) {
    return import(rfbUrl).then(function (module) {
      var RFB = module.default;
      screen.replaceChildren();
      var socket = openSocket(url, function (message) {
        setStatus("connected", "Connected to the VNC display of VM " + message.vm + " on host " + message.host + ".");
      });
      var rfb = new RFB(screen, socket, { shared: true });
      rfb.scaleViewport = true;
      rfb.background = "#282828";
      rfb.addEventListener("securityfailure", function (event) {
        setStatus("error", "The VNC server refused: " + (event.detail.reason || "security failure") + ".");
      });
      rfb.addEventListener("credentialsrequired", function () {
        setStatus("error", "The VNC display asks for a password, which OLVM does not set.");
        rfb.disconnect();
      });
      return {
        socket: socket,
        sendCtrlAltDel: function () { rfb.sendCtrlAltDel(); },
        close: function () { rfb.disconnect(); }
      };
    });
  }

  function connect() {
    generation += 1;
    var mine = generation;
    if (session) session.close();
    session = null;
    setStatus("connecting", "Asking the engine for a console ticket…");
    requestTicket().then(function (ticket) {
      if (mine !== generation) return null;
      setStatus("connecting", "Connecting to the " + (config.kind === "vnc" ? "VNC display" : "serial console") + "…");
      return config.kind === "vnc" ? openVnc(ticket.url) : openSerial(ticket.url);
    }).then(function (opened) {
      if (opened && mine !== generation) opened.close();
      else if (opened) session = opened;
    }).catch(function (err) {
      if (mine === generation) setStatus("error", err.message || String(err));
    });
  }

  if (reconnectButton) reconnectButton.addEventListener("click", connect);
  if (cadButton) cadButton.addEventListener("click", function () { if (session && session.sendCtrlAltDel) session.sendCtrlAltDel(); });
  window.addEventListener("beforeunload", function () { if (session) session.close(); });
  connect();
})();
