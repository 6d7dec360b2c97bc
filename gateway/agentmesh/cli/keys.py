"""``agentmesh keys``: make API keys and the hashed form the gateway's keys file stores."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from rich.console import Console


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="make API keys and their hashes for the keys file")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="print a fresh random key and its hash")
    new.set_defaults(handler=cmd_keys_new)
    hashed = actions.add_parser("hash", help="print the hash of a key read from stdin or a prompt")
    hashed.set_defaults(handler=cmd_keys_hash)


def cmd_keys_new(args: argparse.Namespace, console: Console) -> int:
    # Imported here: the gateway package is heavy, and every other command starts faster.
    from agentmesh.gateway.auth import hash_key, new_key

    key = new_key()
    print(f"key:  {key}")
    print(f"hash: {hash_key(key)}")
    return 0


def cmd_keys_hash(args: argparse.Namespace, console: Console) -> int:
    from agentmesh.gateway.auth import hash_key

    # Never from argv: a key on the command line ends up in shell history and `ps`.
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        raise SystemExit("agentmesh: no key given on stdin")
    print(hash_key(key))
    return 0
