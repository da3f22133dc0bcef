"""`apitoken-operator run`: the operator's command line, and who may write.

    apitoken-operator run [--namespace NS ...| --all-namespaces] [--liveness-port PORT]
                          [--metrics-port PORT] [--token-workers N] [--standalone]
                          [--verbose] [--log-format F]

Kubernetes access comes from KUBECONFIG or the in-cluster ServiceAccount; everything else from
APITOKEN_OPERATOR_* environment variables (see docs/usage.md).

Without --standalone the process first takes the Lease (`kube.lease`); a standby serves only its
liveness endpoint and runs no Kopf at all, so it writes nothing, not even Kopf's annotations.
The holder runs Kopf with the Lease's write gate; when it loses the Lease it stops Kopf and
exits with status 1 (the kubelet restarts it as a standby), as client-go based controllers do.
On a clean stop (SIGTERM) it gives the Lease up so a standby takes over at once.
"""

import argparse
import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace

import kopf
from lightkube import AsyncClient, KubeConfig

from apitoken_operator.kube.lease import LeaseElector
from apitoken_operator.providers.http import utc_now
from apitoken_operator.runtime import LaunchConfig
from apitoken_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

LOG_FORMATS = {
    "json": kopf.LogFormat.JSON,
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="apitoken-operator",
        description="Keep OAuth 2.0 API tokens declared as ApiToken resources in Secrets.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator in the foreground")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="serve ApiTokens and TokenWorkspaces of this namespace (repeatable)",
    )
    where.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="serve every namespace (the default when no --namespace is given)",
    )
    run.add_argument(
        "--liveness-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="serve Kopf's liveness probe at http://0.0.0.0:PORT/healthz (0: off; default 8080)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        metavar="PORT",
        help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics (0: off; default 9090)",
    )
    run.add_argument(
        "--token-workers",
        type=_workers,
        default=None,
        metavar="N",
        help="ApiToken runs in flight at most (1-256; default 12, or "
        "APITOKEN_OPERATOR_TOKEN_WORKERS)",
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no leader election: write without taking the Lease (one process only: tests, "
        "development)",
    )
    run.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="debug logging, including a line per Kubernetes and token-service HTTP request",
    )
    run.add_argument(
        "--log-format",
        choices=sorted(LOG_FORMATS),
        default="json",
        help="json (default): one JSON object per line; plain or full: text",
    )
    return top


def _workers(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"between 1 and 256: {n}")
    return n


def launch_config(args: argparse.Namespace, settings: OperatorSettings) -> LaunchConfig:
    if args.token_workers is not None:
        settings = settings.model_copy(update={"token_workers": args.token_workers})
    return LaunchConfig(
        settings=settings,
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port or None,
    )


async def _run_kopf(
    args: argparse.Namespace, config: LaunchConfig, stop: asyncio.Event | None = None
) -> None:
    from apitoken_operator.handlers.registry import registry

    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    await kopf.operator(
        registry=registry,
        # Never Kopf's peering: the Lease decides who runs.
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(launch=config, stop_flag=stop),
        stop_flag=stop,
    )


def leader_identity() -> str:
    return os.environ.get("POD_ID") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


async def _operate(args: argparse.Namespace, config: LaunchConfig) -> int:
    if args.standalone:
        await _run_kopf(args, config)
        return 0
    settings = config.settings
    client = AsyncClient(KubeConfig.from_env())
    identity = leader_identity()
    elector = LeaseElector(
        client,
        namespace=settings.namespace,
        name=settings.leader_lease_name,
        identity=identity,
        timing=settings.lease_timing(),
        wall_clock=utc_now,
    )
    try:
        standby = await _serve_standby_health(args.liveness_port)
        try:
            await elector.acquire()
        finally:
            if standby is not None:
                standby.close()
                await standby.wait_closed()
        stop = asyncio.Event()
        operator = asyncio.create_task(
            _run_kopf(args, replace(config, gate=elector.check, identity=identity), stop)
        )
        done = threading.Event()
        holding = asyncio.ensure_future(
            asyncio.to_thread(
                elector.hold_in_thread, lambda: AsyncClient(KubeConfig.from_env()), done
            )
        )
        await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done() and holding.result():
            stop.set()
            await operator
            log.error("leadership lost: exiting (restarted as a standby)")
            return 1
        done.set()
        await holding  # within a retry period
        await operator  # Kopf's own exception, if any, goes up
        await elector.release()
        return 0
    finally:
        await client.close()


async def _serve_standby_health(port: int) -> asyncio.Server | None:
    """200 at any path while standing by: a standby is alive; Kopf serves the port once this
    process holds the Lease."""
    if not port:
        return None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = b'{"standby": true}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "0.0.0.0", port, reuse_address=True)


def quiet_http_request_lines(*, verbose: bool) -> None:
    """httpx logs every request at INFO; in a steady operator that is most of the log, so those
    lines show only with --verbose (the e2e tests count requests from them)."""
    level = logging.INFO if verbose else logging.WARNING
    # lightkube's client is the httpx2 fork; the token-service client is httpx.
    for name in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(name).setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = OperatorSettings()
    kopf.configure(verbose=args.verbose, log_format=LOG_FORMATS[args.log_format])
    quiet_http_request_lines(verbose=args.verbose)
    return asyncio.run(_operate(args, launch_config(args, settings)))
