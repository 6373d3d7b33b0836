// Unit tests of txheartbeat/static/txheartbeat.js on Node's built-in test runner
// (node --test tests/js/), on a fake clock and fake sockets: exact times, no waiting.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";

// The module as installed (TXHEARTBEAT_JS, set by tests/test_browser_script.py), else the tree's copy.
const { default: WebsocketHeartbeat } = await import(
  process.env.TXHEARTBEAT_JS ? pathToFileURL(process.env.TXHEARTBEAT_JS).href : "../../txheartbeat/static/txheartbeat.js"
);

class FakeClock {
  constructor() {
    this.t = 0;
    this.next = 1;
    this.calls = new Map();
  }
  setTimeout = (f, ms) => {
    const id = this.next++;
    this.calls.set(id, { at: this.t + ms, f, id });
    return id;
  };
  clearTimeout = (id) => {
    this.calls.delete(id);
  };
  now = () => this.t;
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let due = null;
      for (const c of this.calls.values()) if (c.at <= end && (due === null || c.at < due.at || (c.at === due.at && c.id < due.id))) due = c;
      if (due === null) break;
      this.calls.delete(due.id);
      this.t = due.at;
      due.f();
    }
    this.t = end;
  }
  pending() {
    return [...this.calls.values()].map((c) => c.at - this.t).sort((a, b) => a - b);
  }
}

function fakeSockets() {
  const made = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      made.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError");
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = [code, reason];
      if (this.readyState < 2) this.readyState = 2;
    }
    // driven by the test: what the server / network does
    open() {
      this.readyState = 1;
      this.onopen && this.onopen({ type: "open" });
    }
    message(data) {
      this.onmessage && this.onmessage({ type: "message", data });
    }
    closed(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose && this.onclose({ type: "close", code, reason, wasClean: code === 1000 });
    }
    failed() {
      this.onerror && this.onerror({ type: "error" });
      this.closed(1006, "");
    }
  }
  return { FakeSocket, made };
}

function client(options = {}, random = () => 0.5) {
  const clock = new FakeClock();
  const { FakeSocket, made } = fakeSockets();
  const events = [];
  const h = new WebsocketHeartbeat({ url: "ws://127.0.0.1:9/", WebSocket: FakeSocket, timers: clock, random, ...options });
  for (const name of ["onopen", "onclose", "onerror", "onmessage", "onreconnect", "ongiveup"]) {
    h[name] = (e) => events.push([clock.t, name, e]);
  }
  return { h, clock, made, events, names: () => events.map((e) => e[1]) };
}

test("the seed's constructor options, hooks, methods and defaults are all there", () => {
  const { h } = client();
  assert.deepEqual(
    { ...h.opts, url: undefined, maxReconnectTimeout: undefined, backoffAfter: undefined, maxQueued: undefined, maxQueuedBytes: undefined, openTimeout: undefined, resume: undefined },
    { url: undefined, protocols: "", pingTimeout: 15000, pongTimeout: 10000, reconnectTimeout: 2000, pingMsg: "heartbeat", repeatLimit: null, maxReconnectTimeout: undefined, backoffAfter: undefined, maxQueued: undefined, maxQueuedBytes: undefined, openTimeout: undefined, resume: undefined }
  );
  for (const m of ["send", "close", "createWebSocket", "initEventHandle", "reconnect"]) assert.equal(typeof h[m], "function", m);
  for (const hook of ["onopen", "onclose", "onerror", "onmessage", "onreconnect"]) assert.equal(typeof h[hook], "function", hook);
  assert.equal(h.repeat, 0);
  assert.ok(h.ws);
});

test("a heartbeat goes out only after pingTimeout of inbound silence; any message answers it", () => {
  const { h, clock, made } = client({ pingTimeout: 1000, pongTimeout: 500 });
  made[0].open();
  for (let i = 0; i < 10; i++) {
    clock.advance(900);
    made[0].message("data");
  }
  assert.deepEqual(made[0].sent, []); // a line busy inbound never needs a heartbeat
  clock.advance(999);
  assert.deepEqual(made[0].sent, []);
  clock.advance(1);
  assert.deepEqual(made[0].sent, ["heartbeat"]);
  clock.advance(40);
  made[0].message("heartbeat");
  assert.equal(h.latency, 40);
  clock.advance(1000 - 1); // the next heartbeat: pingTimeout after that answer
  assert.deepEqual(made[0].sent, ["heartbeat"]);
  clock.advance(1);
  assert.deepEqual(made[0].sent, ["heartbeat", "heartbeat"]);
  assert.equal(made.length, 1);
});

test("a silent server is declared dead at exactly pingTimeout + pongTimeout, without waiting for the close handshake", () => {
  const { h, clock, made, events, names } = client({ pingTimeout: 1000, pongTimeout: 1000 });
  made[0].open();
  clock.advance(500);
  made[0].message("last");
  clock.advance(1999);
  assert.ok(!names().includes("onclose"));
  clock.advance(1);
  const close = events.find((e) => e[1] === "onclose");
  assert.equal(close[0], 2500); // 500 + 1000 + 1000
  assert.equal(close[2].code, 1006);
  assert.equal(close[2].heartbeatTimeout, true);
  assert.match(close[2].reason, /no message for 2000 ms/);
  assert.deepEqual(made[0].closedWith, [4000, "heartbeat timeout"]);
  assert.equal(h.ws, null);
  made[0].closed(1006); // the browser's own close event, a minute later: ignored
  assert.equal(names().filter((n) => n === "onclose").length, 1);
  assert.deepEqual(names().slice(-1), ["onreconnect"]);
  clock.advance(2000);
  assert.equal(made.length, 2); // reconnected
});

test("a connection that never opens is left at openTimeout (default pingTimeout + pongTimeout)", () => {
  const { clock, made, names } = client({ pingTimeout: 1000, pongTimeout: 1000 });
  clock.advance(1999);
  assert.ok(!names().includes("onclose"));
  clock.advance(1);
  assert.deepEqual(names(), ["onclose", "onreconnect"]);
  assert.deepEqual(made[0].closedWith, [4000, "heartbeat timeout"]);
});

test("close() is final in every state: connecting, open, while a reconnect waits, and twice", () => {
  for (const state of ["connecting", "open", "waiting"]) {
    const { h, clock, made, names } = client({ pingTimeout: 1000, pongTimeout: 1000 });
    if (state !== "connecting") made[0].open();
    if (state === "waiting") made[0].closed(1006);
    h.close();
    assert.equal(h.readyState, WebsocketHeartbeat.CLOSED);
    clock.advance(60000);
    if (state === "waiting") assert.equal(made.length, 1, state);
    else {
      made[0].closed(1000);
      assert.equal(made.length, 1, state);
    }
    assert.ok(!names().includes("onreconnect") || state === "waiting", state);
    assert.deepEqual(clock.pending(), [], state);
    assert.deepEqual(h.close(), []);
    assert.throws(() => h.send("x"), /after close/);
  }
});

test("close() inside a hook (onopen, onreconnect, onclose) stops everything; a socket opening after close() is closed", () => {
  for (const hook of ["onopen", "onreconnect", "onclose"]) {
    const { h, clock, made } = client();
    h[hook] = () => h.close();
    made[0].open();
    made[0].closed(1006);
    clock.advance(60000);
    assert.equal(made.length, 1, hook);
    assert.deepEqual(clock.pending(), [], hook);
  }
  const { h, made } = client();
  h.close();
  made[0].open(); // the browser finished the handshake anyway
  assert.deepEqual(made[0].closedWith, [1000, undefined]);
});

test("send() while down queues, bounded; what onopen sends goes first, then the queue in order", () => {
  const { h, made } = client({ maxQueued: 3, maxQueuedBytes: 10 });
  h.send("a");
  h.send("bb");
  assert.throws(() => h.send("x".repeat(8)), (e) => e.name === "SendQueueFull" && /maxQueuedBytes=10/.test(e.message));
  h.send("c");
  assert.throws(() => h.send("d"), (e) => e.name === "SendQueueFull" && /maxQueued=3/.test(e.message));
  h.onopen = () => h.send("auth");
  made[0].open();
  assert.deepEqual(made[0].sent, ["auth", "a", "bb", "c"]);
  h.send("e");
  assert.deepEqual(made[0].sent, ["auth", "a", "bb", "c", "e"]);
  assert.deepEqual(h.queued, []);
});

test("close() returns what was still queued: nothing is lost silently", () => {
  const { h } = client();
  h.send("one");
  h.send(new Uint8Array(4));
  assert.deepEqual(h.close().length, 2);
});

test("failed attempts are probed at a steady pace, the first of a streak spread over [0, reconnectTimeout]", () => {
  const draws = [0.0, 0.99, 0.5, 0.0, 1 - 1e-9];
  const { clock, made, events } = client({ reconnectTimeout: 1000 }, () => draws.shift() ?? 0.5);
  const delays = [];
  for (let i = 0; i < 5; i++) {
    made[made.length - 1].failed();
    delays.push(events.filter((e) => e[1] === "onreconnect").slice(-1)[0][2].delay);
    clock.advance(delays[delays.length - 1]);
  }
  assert.equal(delays[0], 0); // 1000 * 0.0
  assert.ok(Math.abs(delays[1] - 1098) < 1e-9); // 1000 * (1 + 0.1 * 0.98)
  assert.equal(delays[2], 1000);
  assert.equal(delays[3], 900);
  assert.ok(delays[4] > 1099 && delays[4] <= 1100);
  assert.equal(made.length, 6);
});

test("connections that open and soon die back off exponentially, capped; one that lives resets it", () => {
  const { clock, made, events } = client({ reconnectTimeout: 1000, maxReconnectTimeout: 8000, pingTimeout: 10000, pongTimeout: 10000 });
  const delays = [];
  for (let i = 0; i < 5; i++) {
    const socket = made[made.length - 1];
    socket.open();
    clock.advance(100);
    socket.closed(1006);
    delays.push(events.filter((e) => e[1] === "onreconnect").slice(-1)[0][2].delay);
    clock.advance(delays[delays.length - 1]);
  }
  assert.deepEqual(delays, [500, 2000, 4000, 8000, 8000]); // the first spread over [0, 1000], then 1000 * 2^(n-1)
  const socket = made[made.length - 1];
  socket.open();
  clock.advance(10000); // lived (pingTimeout): the next loss starts over, spread over [0, 1000]
  socket.message("x");
  socket.closed(1006);
  assert.equal(events.filter((e) => e[1] === "onreconnect").slice(-1)[0][2].delay, 500);
});

test("a server's 1012 retry-window and 1013 retry-after are honoured", () => {
  let { clock, made, events } = client({}, () => 0.25);
  made[0].open();
  clock.advance(100);
  made[0].closed(1012, "retry-window=4");
  assert.equal(events.slice(-1)[0][2].delay, 1000); // 4 s * 0.25
  assert.match(events.slice(-1)[0][2].reason, /retry-window=4/);
  ({ clock, made, events } = client({}, () => 0.5));
  made[0].open();
  made[0].closed(1013, "overloaded; retry-after=7");
  assert.equal(events.slice(-1)[0][2].delay, 7000 + 350);
});

test("repeatLimit gives up, saying why, with the unsent messages; onreconnect says attempt, delay and reason", () => {
  const { h, clock, made, events } = client({ repeatLimit: 2 });
  h.send("kept");
  made[0].failed();
  clock.advance(5000);
  made[1].failed();
  clock.advance(5000);
  made[2].failed();
  const reconnects = events.filter((e) => e[1] === "onreconnect").map((e) => e[2].attempt);
  assert.deepEqual(reconnects, [1, 2]);
  const giveup = events.find((e) => e[1] === "ongiveup")[2];
  assert.match(giveup.reason, /repeatLimit \(2\)/);
  assert.deepEqual(giveup.unsent, ["kept"]);
  assert.equal(h.readyState, WebsocketHeartbeat.CLOSED);
  clock.advance(60000);
  assert.equal(made.length, 3);
});

test("late events of an abandoned socket are ignored", () => {
  const { clock, made, names } = client({ pingTimeout: 100, pongTimeout: 100 });
  made[0].open();
  clock.advance(200);
  const before = names().length;
  made[0].message("late");
  made[0].failed();
  assert.equal(names().length, before);
});

test("bad options fail at construction, saying what to change", () => {
  const { FakeSocket } = fakeSockets();
  assert.throws(() => new WebsocketHeartbeat({ url: "http://x/", WebSocket: FakeSocket }), /ws:\/\/ or wss:\/\//);
  assert.throws(() => new WebsocketHeartbeat({ url: "ws://x/", pingTimeout: -1, WebSocket: FakeSocket }), /pingTimeout/);
  assert.throws(() => new WebsocketHeartbeat({ url: "ws://x/", repeatLimit: 1.5, WebSocket: FakeSocket }), /repeatLimit/);
  assert.throws(() => WebsocketHeartbeat({ url: "ws://x/" }), /constructor/);
});

// A shim of wx.connectSocket: each SocketTask records what it was given and sent; the test drives its events.
function wxShim() {
  const tasks = [];
  const wx = {
    connectSocket(params) {
      const task = { params, sent: [], handlers: {}, closedWith: null };
      for (const ev of ["Open", "Message", "Close", "Error"]) task["on" + ev] = (f) => (task.handlers[ev] = f);
      task.send = ({ data }) => task.sent.push(data);
      task.close = ({ code, reason }) => {
        task.closedWith = [code, reason];
        task.handlers.Close({ code, reason });
      };
      tasks.push(task);
      return task;
    },
  };
  return { wx, tasks };
}

test("mini-program adapter: wx.connectSocket-style SocketTask through the WebSocket option", () => {
  const { wx, tasks } = wxShim();
  const clock = new FakeClock();
  const got = [];
  const h = new WebsocketHeartbeat({ url: "wss://example.test/ws", protocols: "chat", pingTimeout: 1000, pongTimeout: 1000, WebSocket: WebsocketHeartbeat.miniProgram(wx), timers: clock, random: () => 0.5 });
  h.onmessage = (e) => got.push(e.data);
  assert.deepEqual(tasks[0].params.protocols, ["chat"]);
  h.send("queued");
  tasks[0].handlers.Open({});
  assert.deepEqual(tasks[0].sent, ["queued"]);
  tasks[0].handlers.Message({ data: "hi" });
  assert.deepEqual(got, ["hi"]);
  clock.advance(1000);
  assert.deepEqual(tasks[0].sent, ["queued", "heartbeat"]);
  clock.advance(1000); // no answer: dead, abandoned, a new connectSocket after the delay
  assert.deepEqual(tasks[0].closedWith, [4000, "heartbeat timeout"]);
  clock.advance(1000); // the first retry: reconnectTimeout * random()
  assert.equal(tasks.length, 2);
  assert.equal(h.repeat, 1);
  tasks[1].handlers.Error({ errMsg: "connectSocket:fail" });
  assert.equal(h.repeat, 2);
  h.close();
  assert.throws(() => WebsocketHeartbeat.miniProgram({}), /mini-program API/);
});

// Session resume (resume: true, the txheartbeat.resume.1 format of docs/wire.md) -------------

const TOKEN = "t".repeat(32);
const controlsOf = (socket) => socket.sent.filter((m) => typeof m === "string" && m[0] === "c").map((m) => JSON.parse(m.slice(1)));
const dataOf = (socket) => socket.sent.filter((m) => typeof m === "string" && m[0] === "d").map((m) => m.slice(1));
const ctl = (type, fields) => "c" + JSON.stringify({ type, ...fields });

function resumeClient(options = {}) {
  const c = client({ resume: true, pingTimeout: 1000, pongTimeout: 1000, reconnectTimeout: 100, ...options });
  c.h.onsessionlost = (unacked) => c.events.push([c.clock.t, "onsessionlost", unacked]);
  return c;
}

// The server's side of an open: it selects the subprotocol, the page says hello, the server welcomes.
function welcome(socket, { session = TOKEN, received = 0, resumed = false } = {}) {
  socket.protocol = WebsocketHeartbeat.SUBPROTOCOL;
  socket.open();
  const hello = controlsOf(socket)[0];
  socket.message(ctl("welcome", { session, received, resumed }));
  return hello;
}

test("resume offers the subprotocol, says hello with no token first, and runs onopen only after the welcome", () => {
  const { h, made, names } = resumeClient({ protocols: "app" });
  assert.deepEqual(made[0].protocols, ["txheartbeat.resume.1", "txheartbeat.plain", "app"]);
  assert.ok(!made[0].url.includes("session"));
  made[0].protocol = WebsocketHeartbeat.SUBPROTOCOL;
  made[0].open();
  assert.deepEqual(controlsOf(made[0]), [{ type: "hello", session: null, received: 0 }]);
  assert.equal(made[0].binaryType, "arraybuffer");
  assert.deepEqual(names(), []);
  made[0].message(ctl("welcome", { session: TOKEN, received: 0, resumed: false }));
  assert.deepEqual(names(), ["onopen"]);
  assert.equal(h.resumed, false);
});

test("data is framed both ways; controls never reach onmessage", () => {
  const { h, made, events } = resumeClient();
  welcome(made[0]);
  h.send("one");
  h.send(new Uint8Array([1, 2]));
  assert.equal(made[0].sent[1], "done");
  const bytes = new Uint8Array(made[0].sent[2]);
  assert.deepEqual([...bytes], [0x64, 1, 2]);
  made[0].message("dtwo");
  made[0].message(ctl("future-type", {}));
  made[0].message(new Uint8Array([0x64, 7]).buffer);
  const got = events.filter((e) => e[1] === "onmessage").map((e) => e[2].data);
  assert.equal(got[0], "two");
  assert.deepEqual([...new Uint8Array(got[1])], [7]);
  assert.equal(got.length, 2);
});

test("sent before the first open, messages start the new session after the welcome, before what onopen sends", () => {
  const { h, made } = resumeClient();
  h.send("early");
  h.onopen = () => h.send("in onopen");
  welcome(made[0]);
  assert.deepEqual(dataOf(made[0]), ["early", "in onopen"]);
});

test("after a drop the hello carries the token and the count; the welcome's count drives the replay: exactly once, in order", () => {
  const { h, clock, made, names } = resumeClient();
  welcome(made[0]);
  for (let i = 0; i < 5; i++) h.send(`c${i}`);
  for (let i = 0; i < 3; i++) made[0].message(`ds${i}`);
  made[0].closed(1006);
  h.send("c5"); // while down: kept for the resume
  clock.advance(200);
  assert.equal(made.length, 2);
  const hello = welcome(made[1], { received: 3, resumed: true });
  assert.deepEqual(hello, { type: "hello", session: TOKEN, received: 3 });
  assert.deepEqual(dataOf(made[1]), ["c3", "c4", "c5"]);
  assert.equal(h.resumed, true);
  assert.ok(!names().includes("onsessionlost"));
});

test("a refused resume reports every unacknowledged message in onsessionlost, before onopen, and starts afresh", () => {
  const { h, clock, made, events, names } = resumeClient();
  welcome(made[0]);
  h.send("a");
  h.send("b");
  made[0].message(ctl("ack", { received: 1 }));
  made[0].closed(1006);
  h.send("c");
  clock.advance(200);
  welcome(made[1], { session: "n".repeat(32), resumed: false });
  const lost = events.find((e) => e[1] === "onsessionlost")[2];
  assert.deepEqual(lost, ["b", "c"]);
  assert.deepEqual(names().slice(-2), ["onsessionlost", "onopen"]);
  assert.deepEqual(dataOf(made[1]), []);
  h.send("d");
  made[1].closed(1006);
  clock.advance(200);
  made[2].protocol = WebsocketHeartbeat.SUBPROTOCOL;
  made[2].open();
  assert.deepEqual(controlsOf(made[2])[0], { type: "hello", session: "n".repeat(32), received: 0 });
});

test("the page acks every 32 messages; its heartbeat is a control ping with its count, the pong's count empties its buffer", () => {
  const { h, clock, made } = resumeClient();
  welcome(made[0]);
  for (let i = 0; i < 33; i++) made[0].message(`d${i}`);
  assert.deepEqual(controlsOf(made[0]).slice(1), [{ type: "ack", received: 32 }]);
  h.send("x");
  h.send("y");
  assert.equal(h._unacked.length, 2);
  clock.advance(1000);
  assert.deepEqual(controlsOf(made[0]).slice(-1), [{ type: "ping", received: 33 }]);
  assert.ok(!made[0].sent.includes("heartbeat"));
  made[0].message(ctl("pong", { received: 2 }));
  assert.equal(h._unacked.length, 0);
  clock.advance(999);
  assert.equal(made.length, 1); // the pong answered it
});

test("with resume the buffer of unacknowledged messages is bounded: SendQueueFull, nothing dropped", () => {
  const { h, made } = resumeClient({ maxQueued: 64 });
  welcome(made[0]);
  for (let i = 0; i < 64; i++) h.send(String(i));
  assert.throws(() => h.send("more"), { name: "SendQueueFull" });
  assert.equal(dataOf(made[0]).length, 64);
  made[0].message(ctl("ack", { received: 64 }));
  h.send("more");
  assert.equal(dataOf(made[0])[64], "more");
  assert.throws(() => resumeClient({ maxQueued: 10 }), TypeError);
});

test("a server that does not select the subprotocol leaves the page plain: no hello, the seed's heartbeat, early sends flushed", () => {
  const { h, clock, made, names } = resumeClient();
  h.send("early");
  made[0].protocol = "txheartbeat.plain"; // (a txheartbeat server without resume)
  made[0].open();
  assert.deepEqual(names(), ["onopen"]);
  assert.deepEqual(made[0].sent, ["early"]);
  h.send("plain");
  clock.advance(1000);
  assert.deepEqual(made[0].sent, ["early", "plain", "heartbeat"]);
});

test("a session that meets a plain server is lost, with what was not acknowledged", () => {
  const { h, clock, made, events } = resumeClient();
  welcome(made[0]);
  h.send("a");
  made[0].closed(1006);
  clock.advance(200);
  made[1].open();
  assert.deepEqual(events.find((e) => e[1] === "onsessionlost")[2], ["a"]);
});

test("no welcome within openTimeout abandons the connection without a close code (the server keeps the session)", () => {
  const { clock, made, names } = resumeClient({ openTimeout: 500 });
  made[0].protocol = WebsocketHeartbeat.SUBPROTOCOL;
  made[0].open();
  clock.advance(500);
  assert.deepEqual(made[0].closedWith, [undefined, undefined]);
  assert.deepEqual(names(), ["onclose", "onreconnect"]);
});

test("an acknowledgement beyond what was sent abandons the connection; data before the welcome too", () => {
  const a = resumeClient();
  welcome(a.made[0]);
  a.made[0].message(ctl("ack", { received: 1 }));
  assert.deepEqual(a.names().slice(-2), ["onclose", "onreconnect"]);
  const b = resumeClient();
  b.made[0].protocol = WebsocketHeartbeat.SUBPROTOCOL;
  b.made[0].open();
  b.made[0].message("dearly");
  assert.deepEqual(b.names(), ["onclose", "onreconnect"]);
});

test("close() with resume ends the session with 1000 and returns what the server had not acknowledged", () => {
  const { h, made } = resumeClient();
  welcome(made[0]);
  h.send("a");
  h.send("b");
  made[0].message(ctl("ack", { received: 1 }));
  assert.deepEqual(h.close(), ["b"]);
  assert.deepEqual(made[0].closedWith, [1000, undefined]);
});

test("what a plain connection could not flush goes first in the next session, in order", () => {
  const { h, clock, made } = resumeClient();
  h.send("a");
  h.send("b");
  made[0].send = function (data) {
    this.sent.push(data);
    this.readyState = 3; // the socket dies during the flush
  };
  made[0].open(); // plain: "a" goes out, "b" stays queued
  made[0].closed(1006);
  h.send("c");
  clock.advance(200);
  welcome(made[1]);
  assert.deepEqual(dataOf(made[1]), ["b", "c"]);
});

test("resume over the mini-program adapter: the selected subprotocol read from onOpen's res.header, a session, an abandoned connection closed with 4990, resumed", () => {
  const { wx, tasks } = wxShim();
  const clock = new FakeClock();
  const got = [];
  const h = new WebsocketHeartbeat({ url: "wss://example.test/ws", resume: true, pingTimeout: 1000, pongTimeout: 1000, reconnectTimeout: 100, WebSocket: WebsocketHeartbeat.miniProgram(wx), timers: clock, random: () => 0.5 });
  h.onmessage = (e) => got.push(e.data);
  assert.deepEqual(tasks[0].params.protocols, ["txheartbeat.resume.1", "txheartbeat.plain"]);
  h.send("early");
  tasks[0].handlers.Open({ header: { "Sec-WebSocket-Protocol": "txheartbeat.resume.1", Upgrade: "websocket" } });
  assert.deepEqual(controlsOf(tasks[0]), [{ type: "hello", session: null, received: 0 }]);
  tasks[0].handlers.Message({ data: ctl("welcome", { session: TOKEN, received: 0, resumed: false }) });
  tasks[0].handlers.Message({ data: "dfrom the server" });
  assert.deepEqual(got, ["from the server"]);
  assert.deepEqual(dataOf(tasks[0]), ["early"]);
  clock.advance(1000); // idle: the session's ping goes out
  assert.equal(controlsOf(tasks[0]).at(-1).type, "ping");
  clock.advance(1000); // unanswered: given up with a code that keeps the session (a SocketTask cannot send none)
  assert.deepEqual(tasks[0].closedWith, [4990, "txheartbeat: abandoned"]);
  h.send("while down");
  clock.advance(100);
  assert.equal(tasks.length, 2);
  tasks[1].handlers.Open({ header: { "sec-websocket-protocol": "txheartbeat.resume.1" } }); // (any case)
  assert.deepEqual(controlsOf(tasks[1]), [{ type: "hello", session: TOKEN, received: 1 }]);
  tasks[1].handlers.Message({ data: ctl("welcome", { session: TOKEN, received: 1, resumed: true }) });
  assert.equal(h.resumed, true);
  assert.deepEqual(dataOf(tasks[1]), ["while down"]);
  h.close();
  assert.deepEqual(tasks[1].closedWith, [1000, ""]); // close() ends the session
});

test("resume over the mini-program adapter gives up, saying why, when onOpen gives no response header; a txheartbeat.plain answer runs plain", () => {
  const { wx, tasks } = wxShim();
  const clock = new FakeClock();
  const gaveUp = [];
  const h = new WebsocketHeartbeat({ url: "ws://127.0.0.1:9/", resume: true, WebSocket: WebsocketHeartbeat.miniProgram(wx), timers: clock });
  h.ongiveup = (info) => gaveUp.push(info.reason);
  h.send("kept");
  tasks[0].handlers.Open({}); // (WeChat before base library 2.0.0: no res.header)
  assert.equal(gaveUp.length, 1);
  assert.match(gaveUp[0], /did not report it.*no response header.*use resume: false/);
  assert.deepEqual(tasks[0].sent, []); // no hello: the server may not speak the format
  assert.deepEqual(tasks[0].closedWith, [1000, ""]);
  assert.deepEqual(clock.pending(), []);

  const plain = wxShim();
  const p = new WebsocketHeartbeat({ url: "ws://127.0.0.1:9/", resume: true, WebSocket: WebsocketHeartbeat.miniProgram(plain.wx), timers: new FakeClock() });
  p.send("as is");
  plain.tasks[0].handlers.Open({ header: { "Sec-WebSocket-Protocol": "txheartbeat.plain" } }); // a server without resume
  assert.deepEqual(plain.tasks[0].sent, ["as is"]);
  p.close();
});