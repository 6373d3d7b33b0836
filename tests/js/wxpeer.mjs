// A mini-program peer for tests/test_browser_script.py (not a test file: node --test skips it).
// txheartbeat.js with resume: true through WebsocketHeartbeat.miniProgram(wx), where wx.connectSocket
// is a shim on Node's WebSocket whose SocketTask.onOpen gives res.header with the selected
// subprotocol, as WeChat (base library 2.0.0 and later) does.  Arguments: the module's path, the
// server's URL.  Prints one JSON line per event; each line read from stdin is sent ("quit" ends).
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const { default: WebsocketHeartbeat } = await import(pathToFileURL(process.argv[2]).href);
const say = (event) => console.log(JSON.stringify(event));

const wx = {
  connectSocket({ url, protocols }) {
    const ws = new WebSocket(url, protocols);
    ws.binaryType = "arraybuffer";
    const task = { handlers: {} };
    for (const ev of ["Open", "Message", "Close", "Error"]) task["on" + ev] = (f) => (task.handlers[ev] = f);
    ws.onopen = () => task.handlers.Open({ header: { "Sec-WebSocket-Protocol": ws.protocol } });
    ws.onmessage = (e) => task.handlers.Message({ data: e.data });
    ws.onclose = (e) => task.handlers.Close({ code: e.code, reason: e.reason });
    ws.onerror = () => task.handlers.Error({ errMsg: "connectSocket:fail" });
    task.send = ({ data }) => ws.send(data);
    task.close = ({ code, reason }) => {
      say({ kind: "taskclose", code, open: ws.readyState === 1 });
      ws.close(code, reason);
    };
    return task;
  },
};

const h = new WebsocketHeartbeat({
  url: process.argv[3],
  resume: true,
  pingTimeout: 500,
  pongTimeout: 500,
  reconnectTimeout: 200,
  maxReconnectTimeout: 400,
  WebSocket: WebsocketHeartbeat.miniProgram(wx),
});
h.onopen = () => say({ kind: "open", resumed: h.resumed });
h.onmessage = (e) => say({ kind: "message", data: String(e.data) });
h.onclose = (e) => say({ kind: "closed", heartbeatTimeout: !!e.heartbeatTimeout });
h.onsessionlost = (unacked) => say({ kind: "sessionlost", unacked: unacked.length });
h.ongiveup = (info) => say({ kind: "gaveup", reason: info.reason });
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "quit") {
    h.close();
    setTimeout(() => process.exit(0), 100);
  } else {
    h.send(line);
  }
});
