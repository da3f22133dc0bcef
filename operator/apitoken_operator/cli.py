"""`apitoken-operator run`: the operator's command line.

    apitoken-operator run [--namespace NS ...| --all-namespaces] [--liveness-port PORT]
                          [--metrics-port PORT] [--standalone] [--verbose] [--log-format F]

Kubernetes access comes from KUBECONFIG or the in-cluster ServiceAccount; everything else from
APITOKEN_OPERATOR_* environment variables (see docs/usage.md).
"""

import argparse
import asyncio
import logging
from collections.abc import Sequence

import kopf

from apitoken_operator.runtime import LaunchConfig
from apitoken_operator.settings import OperatorSettings

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
        "--standalone",
        action="store_true",
        help="no peering with other operator instances (run exactly one replica)",
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


def launch_config(args: argparse.Namespace, settings: OperatorSettings) -> LaunchConfig:
    return LaunchConfig(
        settings=settings,
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port or None,
    )


async def _operate(args: argparse.Namespace, config: LaunchConfig) -> None:
    from apitoken_operator.handlers.registry import registry

    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    await kopf.operator(
        registry=registry,
        standalone=args.standalone,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(launch=config),
    )


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
    asyncio.run(_operate(args, launch_config(args, settings)))
    return 0
