// An unmodified websocket-heartbeat-js 1.1.3 client (defaults but for the
// timings), given a WebSocket global by the `ws` package.  Prints a JSON
// summary after RUN_MS milliseconds and exits.
global.WebSocket = require("ws");
const mod = require("websocket-heartbeat-js");
const WebsocketHeartbeatJs = mod.default || mod;

const [url, runMs] = [process.argv[2], Number(process.argv[3] || 2000)];
const counts = { opens: 0, closes: 0, reconnects: 0, errors: 0, heartbeatReplies: 0, other: [] };
const client = new WebsocketHeartbeatJs({ url, pingTimeout: 200, pongTimeout: 300 });
client.onopen = () => { counts.opens++; client.send("hello"); };
client.onclose = () => { counts.closes++; };
client.onerror = () => { counts.errors++; };
client.onreconnect = () => { counts.reconnects++; };
client.onmessage = (e) => {
  if (e.data === "heartbeat") counts.heartbeatReplies++;
  else counts.other.push(String(e.data));
};
setTimeout(() => {
  console.log(JSON.stringify(counts));
  process.exit(0);
}, runMs);
