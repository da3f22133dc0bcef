"""`apitoken-service`: serve, init, and key maintenance."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apitoken_service.clock import utc_now
from apitoken_service.database_url import DatabaseUrlError
from apitoken_service.domain.identifiers import valid_user, valid_workspace
from apitoken_service.domain.rules import MAX_LIFETIME_DAYS, MIN_LIFETIME_DAYS
from apitoken_service.key_encryption import KeyEncryptionError, generate_key_file
from apitoken_service.logs import configure_logging
from apitoken_service.settings import IssuerMismatch, Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

# The web stack is imported only by the commands that use it: `init` and friends start faster.

_ENV = "APITOKEN_SERVICE_"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database", help="sqlite:///path/file.db or postgresql://user@host:port/db"
    )
    parser.add_argument(
        "--kek-file", help="key-encryption key file (default: beside the SQLite file)"
    )
    parser.add_argument("--issuer", help="issuer URL; serve and init must agree")
    parser.add_argument("--access-token-ttl", type=int, metavar="SECONDS")
    parser.add_argument("--log-level", default=None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apitoken-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--rotation-grace", type=int, metavar="SECONDS")
    serve.add_argument("--rate-limit", type=float, metavar="PER_SECOND", help="0 disables")
    serve.add_argument("--rate-limit-burst", type=int, metavar="N")
    serve.add_argument("--max-request-bytes", type=int)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--no-access-log", action="store_true")

    init = commands.add_parser("init", help="create a workspace and its admin; print a credential")
    _common(init)
    init.add_argument("--workspace", required=True)
    init.add_argument("--admin", required=True)
    init.add_argument("--lifetime-days", type=int, default=90)
    init.add_argument(
        "--password-stdin",
        action="store_true",
        help="also set the admin's password for the pages, read from standard input",
    )

    password = commands.add_parser(
        "set-password", help="set a member's password for the pages (read from standard input)"
    )
    _common(password)
    password.add_argument("--workspace", required=True)
    password.add_argument("--user", required=True)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _common(migrate)

    rotate = commands.add_parser("rotate-signing-key", help="start signing with a new key")
    _common(rotate)

    kek = commands.add_parser("generate-kek", help="write a new key-encryption key file (0600)")
    kek.add_argument("--out", required=True, type=Path)
    return parser


def _export(args: argparse.Namespace) -> None:
    """Command-line options win over the environment; Settings() then reads both."""
    mapping: dict[str, str] = {
        "database": "DATABASE_URL",
        "kek_file": "KEY_ENCRYPTION_KEY_FILE",
        "issuer": "ISSUER",
        "access_token_ttl": "ACCESS_TOKEN_TTL_SECONDS",
        "rotation_grace": "ROTATION_GRACE_SECONDS",
        "rate_limit": "TOKEN_RATE_LIMIT_PER_SECOND",
        "rate_limit_burst": "TOKEN_RATE_LIMIT_BURST",
        "max_request_bytes": "MAX_REQUEST_BYTES",
        "log_level": "LOG_LEVEL",
    }
    for attribute, variable in mapping.items():
        value = getattr(args, attribute, None)
        if value is not None:
            os.environ[_ENV + variable] = str(value)
    if getattr(args, "no_access_log", False):
        os.environ[_ENV + "ACCESS_LOG"] = "false"
    if args.command == "serve" and args.issuer is None and _ENV + "ISSUER" not in os.environ:
        os.environ[_ENV + "ADDRESS_ISSUER"] = f"http://{args.host}:{args.port}"


def app_from_environment() -> FastAPI:
    """The uvicorn factory (also used by each worker process)."""
    from apitoken_service.api.app import create_app

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from apitoken_service.http_protocol import LimitedHeadHttpToolsProtocol

    settings = Settings()  # fail fast on bad settings, before forking workers
    configure_logging(settings.log_level)
    uvicorn.run(
        "apitoken_service.cli:app_from_environment",
        factory=True,
        http=LimitedHeadHttpToolsProtocol,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )


async def _init(args: argparse.Namespace) -> dict[str, Any]:
    if not valid_workspace(args.workspace):
        raise SystemExit("--workspace: lowercase letters, digits, '.', '_' or '-', at most 64")
    if not valid_user(args.admin):
        raise SystemExit("--admin: letters, digits, '.', '_', '@', '+' or '-', at most 128")
    if not MIN_LIFETIME_DAYS <= args.lifetime_days <= MAX_LIFETIME_DAYS:
        raise SystemExit("--lifetime-days: between 1 and 365")
    from apitoken_service.startup import open_service

    password = _read_password() if args.password_stdin else None
    opened = await open_service(Settings(), utc_now, signs=True)
    try:
        issued = await opened.service.bootstrap(
            args.workspace, args.admin, args.lifetime_days, utc_now()
        )
        if password is not None:
            await opened.accounts.set_password(args.workspace, args.admin, password, utc_now())
    finally:
        await opened.close()
    return {
        "workspace": args.workspace,
        "user": args.admin,
        "accessToken": issued.access_token.value,
        "refreshToken": issued.refresh_token,
    }


def _read_password() -> str:
    """One line from standard input (a terminal does not echo it); never an argument, which
    other users of the machine can read in the process list."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Password: ")
    return sys.stdin.readline().rstrip("\r\n")


async def _set_password(args: argparse.Namespace) -> None:
    from apitoken_service.domain.errors import DomainError
    from apitoken_service.startup import open_service

    password = _read_password()
    opened = await open_service(Settings(), utc_now)
    try:
        await opened.accounts.set_password(args.workspace, args.user, password, utc_now())
    except DomainError as exc:
        raise SystemExit(f"apitoken-service: {exc.detail}") from None
    finally:
        await opened.close()


async def _migrate() -> int:
    from apitoken_service.startup import open_service

    opened = await open_service(Settings(), utc_now)
    await opened.close()
    return 0


async def _rotate() -> str:
    from apitoken_service.startup import open_service

    opened = await open_service(Settings(), utc_now)
    try:
        return await opened.rotate_signing_key(utc_now)
    finally:
        await opened.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate-kek":
        try:
            generate_key_file(args.out)
        except FileExistsError:
            raise SystemExit(f"{args.out} exists; refusing to overwrite a key") from None
        return 0
    _export(args)
    try:
        settings = Settings()
        configure_logging(settings.log_level)
        if args.command == "serve":
            _serve(args)
        elif args.command == "init":
            sys.stdout.write(json.dumps(asyncio.run(_init(args))) + "\n")
        elif args.command == "set-password":
            asyncio.run(_set_password(args))
        elif args.command == "migrate":
            asyncio.run(_migrate())
        elif args.command == "rotate-signing-key":
            sys.stdout.write(json.dumps({"kid": asyncio.run(_rotate())}) + "\n")
    except (DatabaseUrlError, KeyEncryptionError, IssuerMismatch) as exc:
        raise SystemExit(f"apitoken-service: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
