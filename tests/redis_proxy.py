"""A TCP proxy in front of a real redis-server that cuts every connection at the N-th command.

Commands are counted across all connections, in the order Redis would receive them (each is
a RESP array; pipelines and MULTI blocks count each of their commands). Two ways to cut:

- ``before``: command N never reaches Redis (Redis vanished just before it);
- ``after``: Redis runs command N, but its answer never comes back (Redis vanished just
  after it: the client cannot tell whether it happened).

After the cut the proxy refuses every connection, as an unreachable Redis would. With
``cut_at=0`` it only counts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def _command_end(buf: bytes | bytearray, start: int) -> int | None:
    """Where the RESP array starting at ``start`` ends, or None if it is incomplete."""
    line_end = buf.find(b"\r\n", start)
    if line_end < 0:
        return None
    if buf[start : start + 1] != b"*":
        return line_end + 2  # an inline command: one line
    pos = line_end + 2
    for _ in range(int(buf[start + 1 : line_end])):
        size_end = buf.find(b"\r\n", pos)
        if size_end < 0:
            return None
        pos = size_end + 2 + int(buf[pos + 1 : size_end]) + 2
        if pos > len(buf):
            return None
    return pos


class CuttingProxy:
    """Listens on 127.0.0.1; ``url`` is the Redis URL to give clients."""

    def __init__(self, upstream_port: int, *, cut_at: int = 0, mode: str = "before") -> None:
        self.upstream_port = upstream_port
        self.cut_at = cut_at
        self.mode = mode
        self.commands: list[str] = []
        self.cut = threading.Event()
        self._mute = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._listener.close()
        self._cut_all()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [conn, upstream]
            threading.Thread(
                target=self._client_to_redis, args=(conn, upstream), daemon=True
            ).start()
            threading.Thread(
                target=self._redis_to_client, args=(upstream, conn), daemon=True
            ).start()

    def _cut_all(self) -> None:
        self.cut.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _client_to_redis(self, conn: socket.socket, upstream: socket.socket) -> None:
        buf = bytearray()
        while not self.cut.is_set():
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                upstream.close()
                return
            buf += data
            while buf and not self.cut.is_set():
                end = _command_end(buf, 0)
                if end is None:
                    break
                command = bytes(buf[:end])
                del buf[:end]
                if not self._forward(command, upstream):
                    return

    def _forward(self, command: bytes, upstream: socket.socket) -> bool:
        with self._lock:
            self.commands.append(_name(command))
            number = len(self.commands)
        if number == self.cut_at and self.mode == "before":
            self._cut_all()
            return False
        if number == self.cut_at:
            self._mute.set()  # the answer to command N must not reach the client
        try:
            upstream.sendall(command)
        except OSError:
            return False
        if number == self.cut_at:  # after: let Redis run it, then vanish before it answers
            time.sleep(0.3)
            self._cut_all()
            return False
        return True

    def _redis_to_client(self, upstream: socket.socket, conn: socket.socket) -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                return
            if not data or self.cut.is_set():
                conn.close()
                return
            if self._mute.is_set():
                continue
            try:
                conn.sendall(data)
            except OSError:
                return


def _name(command: bytes) -> str:
    """The command's name (and a script's first key), for messages."""
    parts = command.split(b"\r\n")
    words = [p.decode(errors="replace")[:40] for p in parts[2::2]][:4]
    if words and words[0].upper() in ("EVAL", "EVALSHA"):
        words = [words[0], *words[3:4]]  # the script's first key, not its text
    return " ".join(words) if words else command[:20].decode(errors="replace")
