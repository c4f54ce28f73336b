"""A TCP relay from a free loopback port to Redis's, as a separate process: one host's network path to the
broker. Killing the relay cuts that host off from Redis (its connections drop, new ones are refused) while
every other host still reaches it: a network partition of one host, with the spool still shared.

Run as ``python tests/support/tcp_relay.py LISTEN_PORT TARGET_PORT``; it prints ``ready`` once it listens."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def main() -> None:
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    server = socket.create_server(("127.0.0.1", listen))
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target))
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
