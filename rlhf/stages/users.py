"""`rlhf users add|list|disable|enable|set-password`: the assessors and admins of a labeling store.

Passwords are never taken as command-line arguments (they would show in `ps` and shell history): they
are asked for on the terminal, or read from standard input with --password-stdin (one line).
"""

from __future__ import annotations

import getpass
import sys

from rlhf.store import Store, StoreError, check_new_password, check_username


def _password(args) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise StoreError("--password-stdin: standard input is empty; pipe the password in (one line).")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise StoreError(
            "there is no terminal to ask for the password. Pass it on standard input with --password-stdin, "
            f"e.g. printf '%s\\n' \"$PASSWORD\" | rlhf users {args.action} {args.username} --password-stdin"
        )
    try:
        first = getpass.getpass(f"password for {args.username}: ")
        again = getpass.getpass("again: ")
    except EOFError:
        raise StoreError("no password was entered; nothing was changed") from None
    if again != first:
        raise StoreError("the two passwords differ; nothing was changed")
    return first


def main(args) -> int:
    password = None
    if args.action in ("add", "set-password"):  # asked before the store opens: a refusal creates nothing
        if args.action == "add":
            check_username(args.username)
        password = check_new_password(args.username, _password(args))
    with Store(args.store, create=args.action == "add") as store:
        if store.created:
            print(f"created a new store at {args.store}", file=sys.stderr)
        if args.action == "list":
            users = store.list_users()
            for u in users:
                print(f"{u['username']:20s} {u['role']:9s} {'disabled' if u['disabled'] else 'active'}")
            if not users:
                print(f"(no users in {args.store}; add one with `rlhf users add NAME --store {args.store}`)")
        elif args.action == "add":
            store.add_user(args.username, password, role=args.role)
            print(f"added {args.role} '{args.username}'")
        elif args.action == "set-password":
            store.set_password(args.username, password)
            print(f"password of '{args.username}' changed")
        elif args.action in ("disable", "enable"):
            store.set_disabled(args.username, args.action == "disable")
            print(f"'{args.username}' {args.action}d")
    return 0
