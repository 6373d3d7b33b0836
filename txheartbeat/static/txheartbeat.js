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
 * - onreconnect(info) and ongiveup(info) say why;
 * - resume: true (against txheartbeat serve --resume or a Python
 *   HeartbeatServerFactory(resume=True)): every message reaches the other
 *   side exactly once and in order, across drops, in both directions;
 *   onsessionlost(unacked) when the server could not keep the session.
 *   The wire format (subprotocol txheartbeat.resume.1) is in docs/wire.md.
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

// Session resume (docs/wire.md): the subprotocol, and a receiver's
// acknowledgement pace (as txheartbeat._resume's ACK_EVERY / ACK_BYTES).
const SUBPROTOCOL = "txheartbeat.resume.1";
// Offered after it: a txheartbeat server without resume selects this one (the page runs plain),
// since a browser fails a connection whose offered subprotocols all went unanswered.
const PLAIN_SUBPROTOCOL = "txheartbeat.plain";
// The close code of a connection given up on (its session kept) where a close without a code cannot be
// sent: a mini-program's SocketTask sends 1000 when given none, and 1000 ends the session (docs/wire.md).
const ABANDON_CODE = 4990;
const ACK_EVERY = 32;
const ACK_BYTES = 32 * 1024;
const DATA_BYTE = 0x64; // "d"
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

/** A data message framed for the session: "d" + text, or the byte 0x64 before the bytes. */
function frameData(message) {
  if (typeof message === "string") return "d" + message;
  if (message instanceof ArrayBuffer || ArrayBuffer.isView(message)) {
    const bytes = message instanceof ArrayBuffer ? new Uint8Array(message) : new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    const framed = new Uint8Array(bytes.length + 1);
    framed[0] = DATA_BYTE;
    framed.set(bytes, 1);
    return framed.buffer;
  }
  if (typeof Blob !== "undefined" && message instanceof Blob) return new Blob([new Uint8Array([DATA_BYTE]), message]);
  return "d" + String(message); // (what WebSocket.send does with anything else)
}

function control(type, fields) {
  return "c" + JSON.stringify(Object.assign({ type }, fields));
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
 *   resume               resumable session with a txheartbeat server (default false); then
 *                        maxQueued / maxQueuedBytes bound the messages the server has not
 *                        acknowledged (sent while down included: at least 64 / 65536)
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
  resume = false,
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
  if (resume && !(maxQueued >= 2 * ACK_EVERY && maxQueuedBytes >= 2 * ACK_BYTES)) {
    throw new TypeError(
      `WebsocketHeartbeat: with resume, maxQueued must be >= ${2 * ACK_EVERY} and maxQueuedBytes >= ${2 * ACK_BYTES} ` +
        `(the server acknowledges every ${ACK_EVERY} messages or ${ACK_BYTES} bytes), got ${maxQueued}, ${maxQueuedBytes}`
    );
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
    resume: !!resume,
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
  this.onsessionlost = () => {};
  /** With resume: whether the last open carried on the session (nothing lost). */
  this.resumed = false;

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
  // Resume (docs/wire.md). _wire: null (down), "hello" (open, awaiting the welcome),
  // "session" (welcomed: data is framed and numbered), "plain" (the server did not select it).
  this._wire = null;
  this._session = null; // the token: never in the URL, only in the hello
  this._unacked = []; // messages sent (or to send) the server has not acknowledged, oldest first
  this._unackedBytes = 0;
  this._sent = 0; // numbered this session
  this._acked = 0;
  this._received = 0; // data messages delivered this session
  this._ackSent = 0;
  this._inBytes = 0;
  this._openEvent = null;

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
  let protocols = this.opts.protocols;
  if (this.opts.resume) protocols = [SUBPROTOCOL, PLAIN_SUBPROTOCOL].concat(protocols ? protocols : []);
  try {
    ws = protocols ? new this._Socket(this.opts.url, protocols) : new this._Socket(this.opts.url);
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
    if (this.opts.resume && this._resumeOpen(ws, e)) return;
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
    if (this._wire === "session" || this._wire === "hello") this._framedMessage(e);
    else this.onmessage(e);
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
  if (this.opts.resume && this._wire !== "plain") {
    this._number(msg);
    return;
  }
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

/**
 * Close for good, in any state: no reconnect follows (with resume, the server ends the session).
 * Returns the messages still queued (never sent); with resume, also the ones the server had not
 * acknowledged (it may have received the last few of those).
 */
WebsocketHeartbeat.prototype.close = function () {
  const unsent = this.queued.concat(this._endSession());
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
  if (this._wire === "hello") {
    this._abandon(`no welcome within openTimeout (${this.opts.openTimeout} ms)`);
    return;
  }
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
  if (this._wire === "session") {
    // The session's heartbeat: a control ping carrying what was received, answered by a pong with the server's count.
    this.ws.send(control("ping", { received: this._ackValue() }));
    return;
  }
  this.ws.send(typeof this.opts.pingMsg === "function" ? this.opts.pingMsg() : this.opts.pingMsg);
};

WebsocketHeartbeat.prototype._abandon = function (why) {
  // A dead peer: drop the socket now (the browser's close handshake with a
  // frozen server would take a minute), tell the application, reconnect.
  const ws = this.ws;
  this.ws = null; // its late events are ignored
  try {
    // With resume, a close without a code: 1000 or an application code would end the session on the server.
    if (this.opts.resume) ws.close();
    else ws.close(4000, "heartbeat timeout");
  } catch (e) {
    // (closing a dead socket may throw on some platforms)
  }
  this._lost({ type: "close", code: 1006, reason: why, wasClean: false, heartbeatTimeout: true }, 1006, why);
};

WebsocketHeartbeat.prototype._lost = function (event, code, reason) {
  this._cancel();
  this._wire = null;
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

// Session resume (docs/wire.md) -------------------------------------------------

/** The socket opened: start the session's handshake (true), or go on plain (false). */
WebsocketHeartbeat.prototype._resumeOpen = function (ws, e) {
  if (ws.protocol === null) {
    // The socket cannot say which subprotocol the server selected (the mini-program adapter, when the
    // platform's onOpen gives no response header): guessing would have the page speak one format and the
    // server another.  Every connection of this platform would be the same: give up, saying so.
    this._giveUp(
      `resume: true needs the subprotocol the server selected, and this socket did not report it (a mini-program ` +
        `SocketTask whose onOpen gave no response header: WeChat before base library 2.0.0, or a platform without ` +
        `res.header); use resume: false here`
    );
    return true;
  }
  if (ws.protocol !== SUBPROTOCOL) {
    // A server without resume: the page works on, without it.
    this._wire = "plain";
    this.resumed = false;
    if (this._session !== null) {
      this._sessionLost();
    } else {
      // Sent before any session: the queue of a plain connection.
      this.queued = this._unacked.map((m) => m.msg).concat(this.queued);
      this._queuedBytes = this.queued.reduce((n, m) => n + byteLength(m), 0);
      this._resetSession(null);
    }
    return this._final || ws !== this.ws;
  }
  if (this.queued.length > 0) {
    // Left over from a plain connection that closed while flushing (so there is no session): they go first.
    const left = this.queued.map((msg) => ({ msg, size: byteLength(msg) }));
    this._unacked = left.concat(this._unacked);
    this._unackedBytes += this._queuedBytes;
    this.queued = [];
    this._queuedBytes = 0;
  }
  this._wire = "hello";
  this._openEvent = e;
  ws.binaryType = "arraybuffer"; // (a Blob cannot be read at once: its first byte says what it is)
  this._lastInbound = this._timers.now();
  this._pingSentAt = null;
  this._schedule(this.opts.openTimeout); // the welcome's deadline
  ws.send(control("hello", { session: this._session, received: this._received }));
  return true;
};

WebsocketHeartbeat.prototype._resetSession = function (token) {
  this._session = token;
  this._unacked = [];
  this._unackedBytes = 0;
  this._sent = this._acked = this._received = this._ackSent = this._inBytes = 0;
};

/** Forget the session; return the messages the server never acknowledged. */
WebsocketHeartbeat.prototype._endSession = function () {
  const unacked = this._unacked.map((m) => m.msg);
  this._resetSession(null);
  return unacked;
};

WebsocketHeartbeat.prototype._sessionLost = function () {
  const unacked = this._endSession();
  this.onsessionlost(unacked);
};

WebsocketHeartbeat.prototype._number = function (msg) {
  const size = byteLength(msg);
  if (this._unacked.length >= this.opts.maxQueued || this._unackedBytes + size > this.opts.maxQueuedBytes) {
    const error = new Error(
      `WebsocketHeartbeat: send queue full (${this._unacked.length} messages, ${this._unackedBytes} bytes not yet ` +
        `acknowledged by the server; maxQueued=${this.opts.maxQueued}, maxQueuedBytes=${this.opts.maxQueuedBytes})`
    );
    error.name = "SendQueueFull";
    throw error;
  }
  this._unacked.push({ msg, size });
  this._unackedBytes += size;
  this._sent++;
  if (this._wire === "session" && this.ws.readyState === OPEN) this.ws.send(frameData(msg));
};

WebsocketHeartbeat.prototype._acknowledged = function (count) {
  if (!Number.isInteger(count) || count > this._sent) return false;
  let n = count - this._acked;
  if (n > 0) {
    const gone = this._unacked.splice(0, n);
    for (let i = 0; i < gone.length; i++) this._unackedBytes -= gone[i].size;
    this._acked = count;
  }
  return true;
};

WebsocketHeartbeat.prototype._ackValue = function () {
  this._ackSent = this._received;
  this._inBytes = 0;
  return this._received;
};

WebsocketHeartbeat.prototype._framedMessage = function (e) {
  const data = e.data;
  let kind = "";
  let body = null;
  if (typeof data === "string") {
    kind = data.charAt(0);
    body = data.slice(1);
  } else if (data instanceof ArrayBuffer && data.byteLength > 0 && new Uint8Array(data)[0] === DATA_BYTE) {
    kind = "d";
    body = data.slice(1);
  }
  if (kind === "c" && typeof data === "string") {
    let message = null;
    try {
      message = JSON.parse(body);
    } catch (error) {
      // (said below)
    }
    if (message && typeof message.type === "string") this._control(message);
    else this._abandon(`${SUBPROTOCOL}: a control message that is not an object with a type`);
    return;
  }
  if (kind !== "d" || this._wire !== "session") {
    this._abandon(`${SUBPROTOCOL}: ${kind === "d" ? "data before the welcome" : "a message neither data nor control"}`);
    return;
  }
  // Counted first: an onmessage that throws still received it (else a resume would repeat it).
  this._received++;
  this._inBytes += byteLength(body);
  const due = this._received - this._ackSent >= ACK_EVERY || this._inBytes >= ACK_BYTES;
  const ws = this.ws;
  try {
    this.onmessage({ type: "message", data: body, origin: e.origin, lastEventId: e.lastEventId, target: e.target });
  } finally {
    if (due && ws === this.ws && this._wire === "session" && ws.readyState === OPEN) {
      ws.send(control("ack", { received: this._ackValue() }));
    }
  }
};

WebsocketHeartbeat.prototype._control = function (message) {
  const type = message.type;
  if (type === "welcome" && this._wire === "hello") {
    this._welcome(message);
  } else if ((type === "ack" || type === "pong") && this._wire === "session") {
    if (!this._acknowledged(message.received)) {
      this._abandon(`${SUBPROTOCOL}: the server acknowledged ${message.received} messages; ${this._sent} were sent`);
    }
  } else if (type === "welcome" || ((type === "ack" || type === "pong") && this._wire !== "session")) {
    this._abandon(`${SUBPROTOCOL}: ${type} out of place`);
  }
  // other types: from a later version of the format, ignored
};

WebsocketHeartbeat.prototype._welcome = function ({ session, received, resumed }) {
  if (typeof session !== "string" || !Number.isInteger(received) || received < 0) {
    this._abandon(`${SUBPROTOCOL}: a malformed welcome`);
    return;
  }
  const ws = this.ws;
  const carriedOn = resumed === true && session === this._session && received >= this._acked && received <= this._sent;
  let lost = null;
  if (carriedOn) {
    this._acknowledged(received);
  } else if (this._session !== null) {
    lost = this._endSession(); // sent while down included: the new session starts empty
    this._session = session;
  } else {
    // No session yet: what was sent before this open starts the new one.
    const pending = this._unacked;
    const bytes = this._unackedBytes;
    this._resetSession(session);
    this._unacked = pending;
    this._unackedBytes = bytes;
    this._sent = pending.length;
  }
  this._wire = "session";
  this.resumed = carriedOn;
  this.repeat = 0;
  this._openedAt = this._lastInbound = this._timers.now();
  this._pingSentAt = null;
  this._schedule(this.opts.pingTimeout);
  if (lost !== null) this.onsessionlost(lost);
  if (ws !== this.ws || this._final) return;
  // Replayed (or sent for the first time) in order, before anything onopen sends.
  const pending = this._unacked;
  for (let i = 0; i < pending.length && ws.readyState === OPEN; i++) ws.send(frameData(pending[i].msg));
  const event = this._openEvent;
  this._openEvent = null;
  this.onopen(event);
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
  function MiniProgramSocket(url, protocols) {
    const socket = this;
    socket.readyState = CONNECTING;
    // The subprotocol the server selected, from onOpen's res.header (WeChat base library 2.0.0 and later):
    // "" if it selected none, null if the platform did not say (then resume: true gives up: see _resumeOpen).
    socket.protocol = "";
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
      socket.protocol = selectedProtocol(e);
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
    socket.close = (code, reason = "") => {
      if (socket.readyState === CLOSED || socket.readyState === CLOSING) return;
      socket.readyState = CLOSING;
      // A WebSocket's close() without a code sends none; a SocketTask's sends 1000, which would end a session.
      if (code === undefined) task.close({ code: ABANDON_CODE, reason: "txheartbeat: abandoned" });
      else task.close({ code, reason });
    };
  }
  return MiniProgramSocket;
};

/** Sec-WebSocket-Protocol from a SocketTask onOpen's res.header (any case); null without a header object. */
function selectedProtocol(res) {
  const header = res && res.header;
  if (!header || typeof header !== "object") return null;
  for (const name of Object.keys(header)) {
    if (name.toLowerCase() === "sec-websocket-protocol") {
      const value = Array.isArray(header[name]) ? header[name][0] : header[name];
      return typeof value === "string" ? value.trim() : "";
    }
  }
  return "";
}

WebsocketHeartbeat.SUBPROTOCOL = SUBPROTOCOL;

if (typeof globalThis !== "undefined") globalThis.WebsocketHeartbeat = WebsocketHeartbeat;
export default WebsocketHeartbeat;
