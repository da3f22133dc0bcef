"""`apitokenctl`: sign in with a refresh token, list, generate, disable and delete tokens,
manage members. Exit codes: 0 all done; 1 the service refused some or all (each id's result
printed); 2 bad usage; 3 not signed in or the credential was rejected."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apitokenctl import config
from apitokenctl.client import Api, NotSignedIn, Refused, exchange
from apitokenctl.output import default_format, emit

OK, REFUSED, USAGE, NOT_SIGNED_IN = 0, 1, 2, 3
TOKEN_COLUMNS = ("id", "name", "owner", "status", "createdAt", "expiresAt", "lastUsedAt")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=("table", "json"), default=None)
    parser = argparse.ArgumentParser(prog="apitokenctl", description=__doc__, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    login = commands.add_parser(
        "login", parents=[common], help="sign in with a refresh token (stdin or a file)"
    )
    login.add_argument(
        "--url", required=True, help="the token service, e.g. https://tokens.example"
    )
    login.add_argument("--workspace", required=True)
    login.add_argument(
        "--refresh-token-file", type=Path, help="read the refresh token here, not from stdin"
    )

    tokens = commands.add_parser("tokens", parents=[common], help="API tokens")
    token_commands = tokens.add_subparsers(dest="action", required=True)
    listing = token_commands.add_parser("list", parents=[common])
    who = listing.add_mutually_exclusive_group()
    who.add_argument("--all-members", action="store_true", help="every member's (admins)")
    who.add_argument("--owner", help="one member's tokens (admins)")
    listing.add_argument("--status", choices=("active", "disabled", "expired"))
    generate = token_commands.add_parser("generate", parents=[common])
    generate.add_argument("--name", required=True)
    generate.add_argument("--lifetime-days", type=int, required=True, metavar="1..365")
    generate.add_argument(
        "--secret-manifest",
        metavar="NAME",
        help="print a Kubernetes Secret NAME holding the refresh token (for kubectl apply -f -)",
    )
    for verb in ("disable", "delete"):
        bulk = token_commands.add_parser(verb, parents=[common])
        bulk.add_argument("ids", nargs="+", metavar="ID")

    members = commands.add_parser("members", parents=[common], help="workspace members (admins)")
    member_commands = members.add_subparsers(dest="action", required=True)
    member_commands.add_parser("list", parents=[common])
    add = member_commands.add_parser("add", parents=[common])
    add.add_argument("user")
    add.add_argument("--role", choices=("member", "admin"), default="member")
    remove = member_commands.add_parser("remove", parents=[common])
    remove.add_argument("user")
    return parser


def _read_refresh_token(path: Path | None) -> str:
    """From a file or standard input, never from an argument (the process list shows those)."""
    text = path.read_text() if path is not None else sys.stdin.readline()
    return text.strip()


def _login(args: argparse.Namespace, fmt: str) -> int:
    refresh = _read_refresh_token(args.refresh_token_file)
    if not refresh:
        sys.stderr.write("apitokenctl: no refresh token on standard input\n")
        return USAGE
    url = args.url.rstrip("/")
    _, rotated = exchange(url, refresh)
    config.save(config.Credential(url, args.workspace, rotated))
    result = {"url": url, "workspace": args.workspace, "config": str(config.config_path())}
    emit(fmt, [result], ("url", "workspace", "config"), result)
    return OK


def _tokens(api: Api, args: argparse.Namespace, fmt: str) -> int:
    if args.action == "list":
        params: dict[str, str] = {}
        if args.all_members:
            params["owner"] = "*"
        elif args.owner:
            params["owner"] = args.owner
        if args.status:
            params["status"] = args.status
        items = api.pages("/tokens", params)
        emit(fmt, items, TOKEN_COLUMNS, items)
        return OK
    if args.action == "generate":
        body = {"name": args.name, "lifetimeDays": args.lifetime_days}
        created = api.call("POST", "/tokens", json=body)
        if args.secret_manifest:
            sys.stdout.write(_secret_manifest(args.secret_manifest, created))
        elif fmt == "json":
            sys.stdout.write(json.dumps(created, indent=2) + "\n")
        else:
            for key in ("id", "name", "expiresAt", "accessToken", "refreshToken"):
                sys.stdout.write(f"{key}: {created[key]}\n")
            sys.stderr.write("apitokenctl: these values are shown once; keep them safe\n")
        return OK
    results = api.call("POST", "/tokens/bulk", json={"action": args.action, "ids": args.ids})
    items = results["results"]
    emit(fmt, items, ("id", "result"), results)
    return OK if all(item["ok"] for item in items) else REFUSED


def _secret_manifest(name: str, created: dict[str, Any]) -> str:
    """The key the operator's refresh-only mode reads by default (`refresh_token`)."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {"refresh_token": created["refreshToken"]},
    }
    return json.dumps(manifest, indent=2) + "\n"  # JSON is YAML: kubectl apply -f - reads it


def _members(api: Api, args: argparse.Namespace, fmt: str) -> int:
    if args.action == "list":
        items = api.pages("/members", {})
        emit(fmt, items, ("user", "role", "createdAt"), items)
        return OK
    if args.action == "add":
        added = api.call("POST", "/members", json={"user": args.user, "role": args.role})
        # The new member's first credential is what this command exists to hand over.
        emit(fmt, [added], ("user", "role", "tokenId", "refreshToken"), added)
        return OK
    api.call("DELETE", f"/members/{args.user}")
    result = {"user": args.user, "result": "removed"}
    emit(fmt, [result], ("user", "result"), result)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on bad usage
    fmt = args.output or default_format()
    try:
        if args.command == "login":
            return _login(args, fmt)
        api = Api.signed_in()
        if args.command == "tokens":
            return _tokens(api, args, fmt)
        return _members(api, args, fmt)
    except NotSignedIn as exc:
        sys.stderr.write(f"apitokenctl: {exc}\n")
        return NOT_SIGNED_IN
    except Refused as exc:
        sys.stderr.write(f"apitokenctl: refused: {exc.detail}\n")
        return REFUSED
    except OSError as exc:
        sys.stderr.write(f"apitokenctl: {exc.strerror or exc}\n")
        return USAGE


if __name__ == "__main__":
    raise SystemExit(main())
