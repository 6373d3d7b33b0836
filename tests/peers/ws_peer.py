"""
A python-websockets peer for the interop tests, run as a subprocess.

    ws_peer.py server          echo server on 127.0.0.1:0; prints "PORT <n>"
    ws_peer.py client URL      sends "heartbeat" and "hello", prints each reply
                               on its own line, then stays connected sending
                               nothing (ping_interval=None) until killed
"""

import asyncio
import sys

import websockets


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def server():
    async with websockets.serve(echo, "127.0.0.1", 0, ping_interval=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


async def client(url):
    async with websockets.connect(url, ping_interval=None) as ws:
        for text in ("heartbeat", "hello"):
            await ws.send(text)
            print(await ws.recv(), flush=True)
        print("IDLE", flush=True)
        try:
            await ws.recv()
        except websockets.ConnectionClosed as e:
            print(f"CLOSED {e.rcvd.code if e.rcvd else None}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server())
    else:
        asyncio.run(client(sys.argv[2]))
