"""A TCP relay from one address to another, run as its own process: `python tcp_relay.py LISTEN_IP:PORT TARGET_IP:PORT`.

Why: the test kube-apiserver listens on loopback only, and a real node's kubelet lives in a network
namespace of its own, whose loopback is not the host's. Rather than opening the apiserver on every
interface, this relays from one address on the node's own veth (host side) to the apiserver's loopback
port; bytes pass through untouched (TLS end to end). Prints "ready" once listening.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*target), timeout=10)
        except (OSError, asyncio.TimeoutError):
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    server = await asyncio.start_server(handle, listen[0], listen[1], reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    asyncio.run(_serve(_addr(sys.argv[1]), _addr(sys.argv[2])))
