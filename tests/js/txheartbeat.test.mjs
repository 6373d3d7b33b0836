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
    { ...h.opts, url: undefined, maxReconnectTimeout: undefined, backoffAfter: undefined, maxQueued: undefined, maxQueuedBytes: undefined, openTimeout: undefined },
    { url: undefined, protocols: "", pingTimeout: 15000, pongTimeout: 10000, reconnectTimeout: 2000, pingMsg: "heartbeat", repeatLimit: null, maxReconnectTimeout: undefined, backoffAfter: undefined, maxQueued: undefined, maxQueuedBytes: undefined, openTimeout: undefined }
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

test("mini-program adapter: wx.connectSocket-style SocketTask through the WebSocket option", () => {
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
