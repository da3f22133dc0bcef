"""The server protocol: joined writes on a real socket pair; head limits on a real server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import time

import httpx
import pytest

from apitoken_service.http_protocol import MAX_HEAD_BYTES, MAX_HEADER_COUNT, JoinedWrites
from support.tokenservice import RunningTokenService

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


def _raw_request(host: str, port: int, head: bytes, *, chunk: int = 1 << 20) -> bytes:
    """Sends `head` (stopping early if the server closes) and returns what the server answered."""
    with socket.create_connection((host, port), timeout=20) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while part := sock.recv(65536):
                answer += part
        return answer


def test_heads_above_the_limits_are_431_and_do_not_stall_other_clients(
    token_service: RunningTokenService,
) -> None:
    url = httpx.URL(token_service.base_url)
    host, port = url.host, url.port
    assert port is not None
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 50_000_000 + b"\r\n\r\n"
    latencies: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        attack = pool.submit(_raw_request, host, port, huge)
        with httpx.Client(base_url=token_service.base_url, timeout=10) as http:
            for _ in range(20):
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
        answer = attack.result(timeout=30)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"connection: close" in answer and b"application/problem+json" in answer
    assert max(latencies) < 0.5, latencies
    # Too many header fields.
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_COUNT + 1))
    answer = _raw_request(host, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    # Just under the limits, keep-alive with two requests in one write: both are answered.
    fits = b"X-Big: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n"
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fits + b"\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = _raw_request(host, port, request + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer[:300]
