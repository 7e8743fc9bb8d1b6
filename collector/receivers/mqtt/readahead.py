"""A read-ahead buffer under paho's socket: one ``recv`` syscall per burst of packets, not three per packet.

paho reads each incoming packet with at least three ``recv`` calls (the
command byte, the remaining length one byte at a time, then the body) after a
``select``. Every one of those is a syscall that releases the GIL, and with a
second thread busy decoding, every release lets that thread take the GIL and
keeps paho's thread waiting for it: at 10^5 messages per second that is where
most of the receiver's cost over raw paho went. :class:`ReadAhead` serves
those small reads from one large ``recv`` and tells paho (through
``pending()``, the method paho already asks of TLS sockets) that bytes are
waiting, so paho neither blocks in ``select`` nor loses the GIL per packet.

The bytes paho sees, and their order, are exactly the socket's: only the
number of syscalls changes. Everything but ``recv`` and ``pending`` is the
wrapped socket's own (``fileno`` for ``select``, ``close``...); ``send`` passes
through, remembering its failure as ``recv`` does.
"""

from __future__ import annotations

import ssl
from typing import Any

CHUNK = 65_536  # bytes asked of the kernel per recv: a few hundred small messages
_NOT_YET = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)  # "try again", not a failure


class ReadAhead:
    """Wraps a connected (plain or TLS) socket; ``recv(n)`` returns at most ``n`` bytes, as a socket does."""

    __slots__ = ("_buf", "_pos", "_sock", "error")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0
        # The last error of a read. paho logs it and reports only "connection lost"; this says why (a TLS alert
        # from a broker that refuses our certificate is not the same fault as a broker that never answers).
        self.error: OSError | None = None

    @property
    def wrapped(self) -> Any:
        """The socket underneath (for tests, and for what paho hands to socket callbacks)."""
        return self._sock

    def recv(self, bufsize: int) -> bytes:
        """Bytes from the buffer; refilled by one ``recv`` when empty (whose errors, and EOF, pass through)."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            try:
                buf = self._sock.recv(max(bufsize, CHUNK))  # BlockingIOError, SSLWantReadError, OSError: as they come
            except _NOT_YET:
                raise
            except OSError as exc:
                self.error = exc
                raise
            if not buf:
                return buf  # EOF: the connection is closed
            self._buf, pos = buf, 0
        end = pos + bufsize
        self._pos = end if end < len(buf) else len(buf)
        return buf[pos:end]

    def send(self, data: bytes) -> int:
        """The wrapped socket's ``send``; a failure is remembered as ``error`` (paho reports only its own code)."""
        try:
            return self._sock.send(data)
        except _NOT_YET:
            raise
        except OSError as exc:
            self.error = exc
            raise

    def pending(self) -> int:
        """Bytes readable without a syscall: ours, plus a TLS socket's own decrypted ones."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
