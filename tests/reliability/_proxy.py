"""A loopback TCP proxy that cuts download responses short (a connection dropped mid-body)."""

from __future__ import annotations

import socket
import threading
from typing import Any


class CuttingProxy:
    """Forwards to ``target``; the next ``cuts`` download responses lose half their body."""

    def __init__(self, target: str, cuts: int) -> None:
        host, port = target.split("//")[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.cuts = cuts
        self.cut = 0  # how many responses were actually cut
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            state: dict[str, Any] = {"cut_next": False}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state),
                             daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        try:
            while data := client.recv(65536):
                if b":download" in data or b"alt=media" in data:
                    with self._lock:
                        if self.cut < self.cuts:
                            self.cut += 1
                            state["cut_next"] = True
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, Any]) -> None:
        buf = b""
        try:
            while data := upstream.recv(65536):
                if not state["cut_next"]:
                    client.sendall(data)
                    continue
                buf += data
                head, sep, body = buf.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                if len(body) >= length // 2:
                    client.sendall(head + sep + body[: length // 2])
                    break  # and drop the connection mid-body
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
