"""uvicorn's httptools protocol, with the writes of one event-loop iteration joined into one.

uvicorn writes a response's head when the app sends `http.response.start` and its body on
`http.response.body`: two send() system calls and two TCP segments per response, each waking
the client. Measured on the token endpoint, the head's write was the largest single cost in
uvicorn. Here both go out in one write, at the end of the loop iteration in which the app sent
them (the token endpoint sends both in one step). Everything else is uvicorn's own protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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
