"""A TCP relay that a test can tell to cut every connection passing through it: the network between a client
and the service failing mid-response (a phone changing networks, a proxy's idle timeout, an ingress pod
rolling). New connections are relayed as before, so a client that reconnects gets through.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.fakes import free_port


class CuttingProxy:
    """``with CuttingProxy(upstream_port) as proxy:`` → ``proxy.url``; ``proxy.cut()`` closes every open
    connection (both sides, at once); ``proxy.accepted``: connections relayed so far."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.port = free_port()
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, self.port))
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.upstream[0]}:{self.port}"

    def cut(self) -> int:
        """Close every connection open now; how many pairs were cut."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(sockets) // 2

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.accepted += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)  # pass the end on (a half-close), as TCP would

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._listener.close()
        self.cut()
