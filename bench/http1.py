"""A lean HTTP/1.1 keep-alive client connection for the load generator.

A general client (httpx, aiohttp) spends more CPU per request than the service under test would
leave to spare on a 2-core machine; this one writes a prebuilt request and parses only the
status line, Content-Length and body of the answer.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import quote

_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"


class ConnectionClosed(ConnectionError):
    """The server closed the connection before a whole response arrived."""


def form_post(host: str, port: int, path: str, fields: dict[str, str]) -> bytes:
    """One complete `application/x-www-form-urlencoded` POST request, keep-alive."""
    body = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fields.items())
    encoded = body.encode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {len(encoded)}\r\n"
        "\r\n"
    )
    return head.encode() + encoded


def parse_response(buffer: bytearray) -> tuple[int, bytes] | None:
    """Take one complete response (status, body) off the front of `buffer`, if there is one."""
    header_end = buffer.find(_HEADER_END)
    if header_end < 0:
        return None
    head = bytes(buffer[:header_end]).lower()
    status = int(head[9:12])
    start = head.find(_CONTENT_LENGTH)
    if start < 0:
        raise ValueError("response without Content-Length (chunked answers are not supported)")
    start += len(_CONTENT_LENGTH)
    stop = head.find(b"\r\n", start)
    length = int(head[start : stop if stop >= 0 else len(head)])
    total = header_end + len(_HEADER_END) + length
    if len(buffer) < total:
        return None
    body = bytes(buffer[header_end + len(_HEADER_END) : total])
    del buffer[:total]
    return status, body


class Http1Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Http1Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = parse_response(self._buffer)
        except ValueError as error:
            waiter.set_exception(error)
            return
        if response is not None:
            self._waiter = None
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionClosed("connection closed mid-response"))

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        if self._transport is None:
            raise ConnectionClosed("connection is closed")
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(payload)
        return await waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
