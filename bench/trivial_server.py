"""A trivial endpoint: answers every request at once with a fixed token-shaped response.

Run as its own process (`python -m bench.trivial_server PORT`) against the load generator to
measure what the generator alone can drive, doing the same parsing and chaining work it does
against the real service.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from typing import cast

_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"


def _fixed_response() -> bytes:
    # Same shape and about the same size as a real refresh-grant answer.
    body = json.dumps(
        {
            "access_token": "x" * 383,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": "apt_" + secrets.token_urlsafe(32),
        }
    ).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "content-type: application/json\r\n"
        "cache-control: no-store\r\n"
        f"content-length: {len(body)}\r\n"
        "\r\n"
    ).encode()
    return head + body


class TrivialHandler(asyncio.Protocol):
    response = _fixed_response()

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            header_end = self._buffer.find(_HEADER_END)
            if header_end < 0:
                return
            head = bytes(self._buffer[:header_end]).lower()
            start = head.find(_CONTENT_LENGTH)
            length = 0
            if start >= 0:
                start += len(_CONTENT_LENGTH)
                stop = head.find(b"\r\n", start)
                length = int(head[start : stop if stop >= 0 else len(head)])
            total = header_end + len(_HEADER_END) + length
            if len(self._buffer) < total:
                return
            del self._buffer[:total]
            assert self._transport is not None
            self._transport.write(self.response)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialHandler, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    import uvloop

    uvloop.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
