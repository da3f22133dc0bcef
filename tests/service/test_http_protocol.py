"""The server protocol's joined writes, on a real socket pair."""

from __future__ import annotations

import asyncio
import socket

import pytest

from apitoken_service.http_protocol import JoinedWrites

pytestmark = pytest.mark.service


async def test_writes_of_one_loop_iteration_leave_in_one_send_and_close_flushes() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    joined = JoinedWrites(transport, loop)
    try:
        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        joined.write(b"body")
        with pytest.raises(BlockingIOError):
            theirs.recv(1024)  # nothing sent before the loop runs the flush
        await asyncio.sleep(0)
        assert theirs.recv(1024) == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"

        joined.writelines([b"in ", b"order"])
        await asyncio.sleep(0)
        assert theirs.recv(1024) == b"in order"

        joined.write(b"last words")
        joined.close()  # flushes before closing
        await asyncio.sleep(0)
        assert theirs.recv(1024) == b"last words"
        assert joined.is_closing()
    finally:
        transport.close()
        theirs.close()
