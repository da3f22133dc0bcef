"""uvicorn's httptools protocol, with the writes of one event-loop iteration joined into one.

uvicorn writes a response's head when the app sends `http.response.start` and its body on
`http.response.body`: two send() system calls and two TCP segments per response, each waking
the client. Measured on the token endpoint, the head's write was the largest single cost in
uvicorn. Here both go out in one write, at the end of the loop iteration in which the app sent
them (the token endpoint sends both in one step).

It also limits a request's head (request line and headers), which neither uvicorn nor httptools
does: without a limit, one 50 MB header stalled every other client for seconds while httptools
gathered it. Above MAX_HEAD_BYTES or MAX_HEADER_COUNT the answer is 431 (RFC 6585 section 5)
and the connection is closed. Everything else is uvicorn's own protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Request line and headers together: Keycloak (Vert.x/Quarkus) and nginx allow 8-32 KiB, Go's
# net/http (Hydra, Dex) 1 MiB; 64 KiB fits any real client, bearer tokens and proxies included.
MAX_HEAD_BYTES = 65_536
# Tomcat's default (Keycloak's former server); a client needs a dozen, proxies add a few.
MAX_HEADER_COUNT = 100


class _HeadTooLarge(Exception):
    pass


class JoinedWrites:
    """A transport whose writes are buffered until the loop runs the flush it scheduled; every
    other attribute is the real transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        # Flow control (pausing reads) stays on the real transport.
        self.transport = JoinedWrites(transport, self.loop)  # type: ignore[assignment]


class LimitedHeadHttpToolsProtocol(JoinedWritesHttpToolsProtocol):
    """Counts the bytes and headers of each request's head; 431 and close above the limits."""

    _head_bytes = 0
    _header_count = 0
    _in_body = False

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADER_COUNT:
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            self._feed(data)
            return
        room = MAX_HEAD_BYTES - self._head_bytes
        self._head_bytes += min(len(data), room)
        # Fed up to the limit first: when the head ends within it, the rest is body or the
        # next request, and is counted as such.
        if not self._feed(data[:room]) or len(data) <= room:
            return
        if self._in_body or self._head_bytes < MAX_HEAD_BYTES:
            self.data_received(data[room:])
            return
        self._send_431()

    def _feed(self, data: bytes) -> bool:
        """uvicorn's data_received, with the head limits; False when the connection ended."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._send_431()
                return False
            raise
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        return not self.transport.is_closing()

    def _send_431(self) -> None:
        body = (
            b'{"type":"about:blank","title":"Request header fields too large","status":431,'
            b'"detail":"request heads are limited to %d bytes and %d header fields"}'
            % (MAX_HEAD_BYTES, MAX_HEADER_COUNT)
        )
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: application/problem+json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
