/*
 * txheartbeat.js: a drop-in superset of websocket-heartbeat-js 1.1.3 for
 * browsers and mini-programs, from the txheartbeat Python package (MIT).
 *
 * The same options, hooks and methods as the seed, so that a page switches
 * by changing its import; and, where the seed falls short:
 * - a silent server is declared dead at pingTimeout + pongTimeout after its
 *   last message, without waiting for the browser's close handshake;
 * - close() is final in every state (even while a reconnect is pending);
 * - send() while down queues, bounded (maxQueued messages, maxQueuedBytes):
 *   past it, it throws; nothing is dropped silently;
 * - reconnects are jittered (no storm on a restarted server) and back off
 *   when connections keep failing; a server's 1012 (retry-window=S) and
 *   1013 (retry-after=S) close hints are honoured;
 * - onreconnect(info) and ongiveup(info) say why.
 *
 * As an ES module: import WebsocketHeartbeat from "/txheartbeat.js".
 * As a classic script (/txheartbeat.classic.js, the same file without its
 * last line): window.WebsocketHeartbeat.  No dependencies, no build step.
 */

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

// Close codes (RFC 6455 / IANA) that carry a reconnect hint.
const SERVICE_RESTART = 1012;
const TRY_AGAIN_LATER = 1013;
const WINDOW_HINT = /retry-window=(\d+(?:\.\d+)?)/;
const AFTER_HINT = /retry-after=(\d+(?:\.\d+)?)/;

function byteLength(message) {
  if (typeof message === "string") {
    // UTF-8 length without allocating: 1-4 bytes a code point.
    let n = 0;
    for (let i = 0; i < message.length; i++) {
      const c = message.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c < 0xdc00) { n += 4; i++; }
      else n += 3;
    }
    return n;
  }
  if (message && typeof message.byteLength === "number") return message.byteLength;
  if (message && typeof message.size === "number") return message.size; // a Blob
  return 0;
}

function checkDelay(name, value, allowNull) {
  if (value === null && allowNull) return value;
  if (typeof value !== "number" || !(value >= 0) || !isFinite(value)) {
    throw new TypeError(`WebsocketHeartbeat: ${name} must be a number of milliseconds >= 0, got ${value}`);
  }
  return value;
}

const defaultTimers = {
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (id) => clearTimeout(id),
  now: () => Date.now(),
};

/**
 * The seed's constructor, same options (milliseconds), plus:
 *   maxReconnectTimeout  cap of the backoff (default 30000)
 *   maxQueued            messages send() may queue while down (default 1000)
 *   maxQueuedBytes       their total size (default 1 MiB)
 *   openTimeout          a connection not open by then is left (default pingTimeout + pongTimeout)
 *   WebSocket            the socket constructor (new WebSocket(url, protocols));
 *                        WebsocketHeartbeat.miniProgram(wx) adapts wx.connectSocket
 *   timers, random       for tests: {setTimeout, clearTimeout, now}, () => [0, 1)
 */
function WebsocketHeartbeat({
  url,
  protocols = "",
  pingTimeout = 15000,
  pongTimeout = 10000,
  reconnectTimeout = 2000,
  pingMsg = "heartbeat",
  repeatLimit = null,
  maxReconnectTimeout = 30000,
  maxQueued = 1000,
  maxQueuedBytes = 1 << 20,
  openTimeout = null,
  WebSocket: Socket = typeof WebSocket !== "undefined" ? WebSocket : undefined,
  timers = defaultTimers,
  random = Math.random,
} = {}) {
  if (!(this instanceof WebsocketHeartbeat)) {
    throw new TypeError("WebsocketHeartbeat is a constructor: use new WebsocketHeartbeat({url})");
  }
  if (typeof url !== "string" || !/^wss?:\/\//i.test(url)) {
    throw new TypeError(`WebsocketHeartbeat: url must be a ws:// or wss:// URL string, got ${url}`);
  }
  if (typeof Socket !== "function") {
    throw new TypeError("WebsocketHeartbeat: no WebSocket here: pass the WebSocket option (e.g. WebsocketHeartbeat.miniProgram(wx))");
  }
  if (repeatLimit !== null && !(Number.isInteger(repeatLimit) && repeatLimit >= 0)) {
    throw new TypeError(`WebsocketHeartbeat: repeatLimit must be null or an integer >= 0, got ${repeatLimit}`);
  }
  this.opts = {
    url,
    protocols,
    pingTimeout: checkDelay("pingTimeout", pingTimeout),
    pongTimeout: checkDelay("pongTimeout", pongTimeout),
    reconnectTimeout: checkDelay("reconnectTimeout", reconnectTimeout),
    pingMsg,
    repeatLimit,
    maxReconnectTimeout: Math.max(checkDelay("maxReconnectTimeout", maxReconnectTimeout), reconnectTimeout),
    maxQueued,
    maxQueuedBytes,
    openTimeout: openTimeout === null ? pingTimeout + pongTimeout : checkDelay("openTimeout", openTimeout),
  };
  this.ws = null; // the current socket: a new one after every reconnect
  this.repeat = 0; // reconnect attempts since the last open (the seed's count)
  /** Milliseconds between the last heartbeat and the first message after it, or null. */
  this.latency = null;
  /** Messages sent while down, waiting for the next open. */
  this.queued = [];

  // Hooks: set them on the object; they survive every reconnect.
  this.onclose = () => {};
  this.onerror = () => {};
  this.onopen = () => {};
  this.onmessage = () => {};
  this.onreconnect = () => {};
  this.ongiveup = () => {};

  this._Socket = Socket;
  this._timers = timers;
  this._random = random;
  this._queuedBytes = 0;
  this._final = false; // close() was called
  this._timer = null; // the one liveness timer of the open connection
  this._reconnectTimer = null;
  this._lastInbound = 0;
  this._pingSentAt = null; // a heartbeat awaits any message since then
  this._spread = true; // the next retry is the first of a streak: spread over [0, reconnectTimeout]
  this._youngDeaths = 0; // connections in a row that opened and soon died: the backoff's step
  this._openedAt = null;
  this._hint = null; // the reconnect delay a server's close asked for
  this._inOpen = false; // onopen is running: its sends go before the queue

  this.createWebSocket();
}

WebsocketHeartbeat.CONNECTING = CONNECTING;
WebsocketHeartbeat.OPEN = OPEN;
WebsocketHeartbeat.CLOSING = CLOSING;
WebsocketHeartbeat.CLOSED = CLOSED;

Object.defineProperty(WebsocketHeartbeat.prototype, "readyState", {
  /** The current socket's readyState; CLOSED once close() was called. */
  get() {
    if (this._final || !this.ws) return CLOSED;
    return this.ws.readyState;
  },
});

WebsocketHeartbeat.prototype.createWebSocket = function () {
  if (this._final) return;
  let ws;
  try {
    ws = this.opts.protocols ? new this._Socket(this.opts.url, this.opts.protocols) : new this._Socket(this.opts.url);
  } catch (e) {
    // (a URL the browser refuses: no reconnect can fix it)
    this._giveUp(`the WebSocket constructor threw: ${e && e.message}`);
    throw e;
  }
  this.ws = ws;
  this.initEventHandle();
  // Bounded open: a server that accepts TCP and never answers the upgrade (frozen) is left.
  this._schedule(this.opts.openTimeout);
};

WebsocketHeartbeat.prototype.initEventHandle = function () {
  const ws = this.ws;
  const current = () => ws === this.ws; // events of an abandoned socket are ignored
  ws.onopen = (e) => {
    if (!current()) return;
    if (this._final) {
      ws.close(1000);
      return;
    }
    this.repeat = 0;
    this._openedAt = this._lastInbound = this._timers.now();
    this._pingSentAt = null;
    this._schedule(this.opts.pingTimeout);
    // As the Python client: what onopen sends goes first, then what was queued while down.
    this._inOpen = true;
    try {
      this.onopen(e);
    } finally {
      this._inOpen = false;
    }
    if (ws === this.ws && !this._final) this._flush();
  };
  ws.onmessage = (e) => {
    if (!current()) return;
    // O(1) per message: a timestamp; the timer looks at it when it fires.
    const now = this._timers.now();
    if (this._pingSentAt !== null) {
      this.latency = now - this._pingSentAt;
      this._pingSentAt = null;
    }
    this._lastInbound = now;
    this.onmessage(e);
  };
  ws.onerror = (e) => {
    if (!current()) return;
    this.onerror(e);
  };
  ws.onclose = (e) => {
    if (!current()) return;
    this._lost(e, e && e.code !== undefined ? e.code : 1006, e ? e.reason || "" : "");
  };
};

WebsocketHeartbeat.prototype.send = function (msg) {
  if (this._final) throw new Error("WebsocketHeartbeat: send() after close()");
  if (this.ws && this.ws.readyState === OPEN && (this.queued.length === 0 || this._inOpen)) {
    this.ws.send(msg);
    return;
  }
  const size = byteLength(msg);
  if (this.queued.length >= this.opts.maxQueued || this._queuedBytes + size > this.opts.maxQueuedBytes) {
    const error = new Error(
      `WebsocketHeartbeat: send queue full (${this.queued.length} messages, ${this._queuedBytes} bytes ` +
        `wait for the connection; maxQueued=${this.opts.maxQueued}, maxQueuedBytes=${this.opts.maxQueuedBytes})`
    );
    error.name = "SendQueueFull";
    throw error;
  }
  this.queued.push(msg);
  this._queuedBytes += size;
};

/** Close for good, in any state: no reconnect follows. Returns the messages still queued (never sent). */
WebsocketHeartbeat.prototype.close = function () {
  const unsent = this.queued;
  this.queued = [];
  this._queuedBytes = 0;
  if (this._final) return unsent;
  this._final = true;
  this.forbidReconnect = true; // (the seed's flag, read by code that peeks at it)
  this._cancel();
  if (this._reconnectTimer !== null) {
    this._timers.clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
  }
  const ws = this.ws;
  if (ws && (ws.readyState === OPEN || ws.readyState === CONNECTING)) {
    try {
      ws.close(1000);
    } catch (e) {
      // (a socket that cannot close any more is closed enough)
    }
  }
  return unsent;
};

// Internals -------------------------------------------------------------------

WebsocketHeartbeat.prototype._flush = function () {
  const queued = this.queued;
  this.queued = [];
  this._queuedBytes = 0;
  for (let i = 0; i < queued.length; i++) {
    if (this.ws.readyState !== OPEN) {
      // Closed inside a hook or by a send error: keep the rest, in order, for the next open.
      this.queued = queued.slice(i).concat(this.queued);
      this._queuedBytes = this.queued.reduce((n, m) => n + byteLength(m), 0);
      return;
    }
    this.ws.send(queued[i]);
  }
};

WebsocketHeartbeat.prototype._schedule = function (delay) {
  this._cancel();
  this._timer = this._timers.setTimeout(() => this._tick(), Math.max(0, delay));
};

WebsocketHeartbeat.prototype._cancel = function () {
  if (this._timer !== null) {
    this._timers.clearTimeout(this._timer);
    this._timer = null;
  }
};

WebsocketHeartbeat.prototype._tick = function () {
  this._timer = null;
  if (this._final || !this.ws) return;
  const now = this._timers.now();
  const { pingTimeout, pongTimeout } = this.opts;
  if (this.ws.readyState === CONNECTING) {
    this._abandon(`not open within openTimeout (${this.opts.openTimeout} ms)`);
    return;
  }
  if (this.ws.readyState !== OPEN) return; // closing: its close event decides
  if (this._pingSentAt !== null) {
    // The heartbeat's deadline: nothing at all arrived since it went out.
    const silent = now - this._lastInbound;
    this._abandon(`no message for ${silent} ms (pingTimeout ${pingTimeout} + pongTimeout ${pongTimeout})`);
    return;
  }
  const idle = now - this._lastInbound;
  if (idle < pingTimeout) {
    this._schedule(pingTimeout - idle); // traffic came: look again when it would be idle long enough
    return;
  }
  this._pingSentAt = now;
  this._schedule(pongTimeout);
  this.ws.send(typeof this.opts.pingMsg === "function" ? this.opts.pingMsg() : this.opts.pingMsg);
};

WebsocketHeartbeat.prototype._abandon = function (why) {
  // A dead peer: drop the socket now (the browser's close handshake with a
  // frozen server would take a minute), tell the application, reconnect.
  const ws = this.ws;
  this.ws = null; // its late events are ignored
  try {
    ws.close(4000, "heartbeat timeout");
  } catch (e) {
    // (closing a dead socket may throw on some platforms)
  }
  this._lost({ type: "close", code: 1006, reason: why, wasClean: false, heartbeatTimeout: true }, 1006, why);
};

WebsocketHeartbeat.prototype._lost = function (event, code, reason) {
  this._cancel();
  this._pingSentAt = null;
  const now = this._timers.now();
  if (this._openedAt !== null) {
    // A connection that lived resets the backoff, one that soon died (accepted, then dropped) is a step of it.
    // The first retry after either is spread (every client of a crashed server retries at that moment).
    this._youngDeaths = now - this._openedAt >= Math.max(this.opts.pingTimeout, 5000) ? 0 : this._youngDeaths + 1;
    this._spread = this._youngDeaths <= 1;
  }
  this._openedAt = null;
  this._hint = null;
  if (code === SERVICE_RESTART) {
    const m = WINDOW_HINT.exec(reason);
    const windowMs = m ? parseFloat(m[1]) * 1000 : 5000;
    this._hint = Math.min(this.opts.maxReconnectTimeout, windowMs) * this._random();
    this._youngDeaths = 0;
  } else if (code === TRY_AGAIN_LATER) {
    const m = AFTER_HINT.exec(reason);
    this._youngDeaths = Math.max(1, this._youngDeaths);
    if (m) {
      const wait = Math.min(this.opts.maxReconnectTimeout, parseFloat(m[1]) * 1000);
      this._hint = Math.min(this.opts.maxReconnectTimeout, wait + 0.1 * wait * this._random());
    }
  }
  this.onclose(event);
  this.reconnect(reason || `closed with code ${code}`);
};

// The browser cannot tell a refused connection from any other failure before
// open: those are probed at a steady pace (reconnectTimeout +- 10 %, the
// first retry of a streak spread over [0, reconnectTimeout]), which brings
// every client back within one pace after a restart, without a storm.
// Connections that open and soon die (a server accepting and dropping, a dead
// peer, a 1013) back off: reconnectTimeout * 2^(n-1) +- 10 % for the n-th in
// a row, up to maxReconnectTimeout.
WebsocketHeartbeat.prototype._delay = function () {
  if (this._hint !== null) return this._hint;
  const pace = this.opts.reconnectTimeout;
  const spread = this._spread;
  this._spread = false;
  if (spread) return pace * this._random();
  const jitter = 1 + 0.1 * (2 * this._random() - 1);
  const steps = this._youngDeaths;
  return Math.min(this.opts.maxReconnectTimeout, pace * Math.pow(2, Math.max(0, steps - 1)) * jitter);
};

WebsocketHeartbeat.prototype.reconnect = function (why) {
  if (this._final || this._reconnectTimer !== null) return;
  if (this.opts.repeatLimit !== null && this.opts.repeatLimit <= this.repeat) {
    this._giveUp(`repeatLimit (${this.opts.repeatLimit}) reconnect attempts failed; the last: ${why}`);
    return;
  }
  this.repeat++;
  const delay = this._delay();
  this._reconnectTimer = this._timers.setTimeout(() => {
    this._reconnectTimer = null;
    if (this._final) return;
    try {
      this.createWebSocket();
    } catch (e) {
      // said by ongiveup
    }
  }, delay);
  this.onreconnect({ attempt: this.repeat, delay, reason: why || "" });
};

WebsocketHeartbeat.prototype._giveUp = function (why) {
  if (this._final) return;
  const unsent = this.close();
  this.ongiveup({ reason: why, attempts: this.repeat, unsent });
};

/**
 * A WebSocket-like constructor over a mini-program's connectSocket
 * (wx, my, swan, tt, uni: SocketTask with onOpen/onMessage/onClose/onError).
 *   new WebsocketHeartbeat({url, WebSocket: WebsocketHeartbeat.miniProgram(wx)})
 */
WebsocketHeartbeat.miniProgram = function (api) {
  if (!api || typeof api.connectSocket !== "function") {
    throw new TypeError("WebsocketHeartbeat.miniProgram: pass the mini-program API object (wx, my, swan, tt, uni)");
  }
  return function MiniProgramSocket(url, protocols) {
    const socket = this;
    socket.readyState = CONNECTING;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    const params = { url, complete: () => {} };
    if (protocols) params.protocols = Array.isArray(protocols) ? protocols : [protocols];
    const task = api.connectSocket(params);
    socket.task = task;
    const closed = (code, reason) => {
      if (socket.readyState === CLOSED) return;
      socket.readyState = CLOSED;
      if (socket.onclose) socket.onclose({ type: "close", code, reason, wasClean: code === 1000 });
    };
    task.onOpen((e) => {
      if (socket.readyState !== CONNECTING) return;
      socket.readyState = OPEN;
      if (socket.onopen) socket.onopen({ type: "open", detail: e });
    });
    task.onMessage((e) => {
      if (socket.readyState === OPEN && socket.onmessage) socket.onmessage({ type: "message", data: e.data });
    });
    task.onError((e) => {
      if (socket.onerror) socket.onerror({ type: "error", detail: e });
      closed(1006, (e && e.errMsg) || "error");
    });
    task.onClose((e) => closed(e && e.code !== undefined ? e.code : 1006, (e && e.reason) || ""));
    socket.send = (data) => {
      if (socket.readyState !== OPEN) throw new Error("MiniProgramSocket: not open");
      task.send({ data });
    };
    socket.close = (code = 1000, reason = "") => {
      if (socket.readyState === CLOSED || socket.readyState === CLOSING) return;
      socket.readyState = CLOSING;
      task.close({ code, reason });
    };
  };
};

if (typeof globalThis !== "undefined") globalThis.WebsocketHeartbeat = WebsocketHeartbeat;
export default WebsocketHeartbeat;
