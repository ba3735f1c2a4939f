"""``cdcwh token``: a bearer token for the local default (HS256, signed with ``serve.jwt_secret``)."""

from __future__ import annotations

import argparse

from cdcwh.config import Settings
from cdcwh.errors import ConfigError


def _claim(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a claim is NAME=VALUE, got {text!r}")
    return name, value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "token",
        help="print a JWT for cdcwh serve (signed with serve.jwt_secret)",
        description="Print a signed HS256 bearer token with the given subject, roles and claims; the claims "
        "bind the semantic model's row filters (e.g. --claim country=DE).",
    )
    parser.add_argument("--role", action="append", required=True, help="a role of the model (repeatable)")
    parser.add_argument("--claim", action="append", type=_claim, default=[], help="NAME=VALUE (repeatable)")
    parser.add_argument("--subject", default="local", help="the sub claim (default: local)")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default: 3600)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cdcwh.serve.auth import check_settings, issue

    secret = settings.serve.jwt_secret
    if secret is None:
        raise ConfigError("cdcwh token signs with CDCWH_SERVE__JWT_SECRET (serve.jwt_secret): it is unset")
    check_settings(settings.serve)
    reserved = {"sub", "roles", "exp", "iat"} & {name for name, _ in args.claim}
    if reserved:
        raise ConfigError(f"--claim cannot set {sorted(reserved)}: use --subject, --role, --ttl")
    print(
        issue(
            secret.get_secret_value(),
            subject=args.subject,
            roles=args.role,
            claims=dict(args.claim),
            ttl_s=args.ttl,
        )
    )
    return 0
