"""`rlhf users add|list|disable|enable|set-password`: the assessors and admins of a labeling store.

Passwords are never taken as command-line arguments (they would show in `ps` and shell history): they
are asked for on the terminal, or read from standard input with --password-stdin (one line).
"""

from __future__ import annotations

import getpass
import sys

from rlhf.store.service import Store, StoreError


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != first:
        raise StoreError("the two passwords differ; nothing was changed")
    return first


def main(args) -> int:
    with Store(args.store) as store:
        if args.action == "list":
            users = store.list_users()
            for u in users:
                print(f"{u['username']:20s} {u['role']:9s} {'disabled' if u['disabled'] else 'active'}")
            if not users:
                print(f"(no users in {args.store}; add one with `rlhf users add NAME --store {args.store}`)")
        elif args.action == "add":
            store.add_user(args.username, _password(args), role=args.role)
            print(f"added {args.role} '{args.username}'")
        elif args.action == "set-password":
            store.set_password(args.username, _password(args))
            print(f"password of '{args.username}' changed")
        elif args.action in ("disable", "enable"):
            store.set_disabled(args.username, args.action == "disable")
            print(f"'{args.username}' {args.action}d")
    return 0
