"""`basalt account|user|key ...`: accounts, their users, identity policies and access keys.

Through the admin API (root credentials). A key's secret is printed once, by
``key create``; nothing can show it again.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from .buckets import _intermixed
from .common import CLIError, admin_client, emit, emit_table

ACCOUNTS = "/_basalt/v1/accounts"
KEYS = "/_basalt/v1/keys"


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _user_path(args: argparse.Namespace, *rest: str) -> str:
    return "/".join([ACCOUNTS, _q(args.account), "users", _q(args.user), *rest])


# --- accounts ------------------------------------------------------------------------

ACCOUNT_COLUMNS = [("NAME", lambda a: a["name"], False), ("ID", lambda a: a["id"], False),
                   ("EMAIL", lambda a: a.get("email") or "", False),
                   ("CREATED", lambda a: a.get("created"), False)]


def cmd_account_create(args: argparse.Namespace) -> int:
    account = admin_client(args).call("POST", ACCOUNTS,
                                      body={"name": args.name, "email": args.email})
    return emit(args, account, f"created account {account['name']} (id {account['id']})")


def cmd_account_list(args: argparse.Namespace) -> int:
    return emit_table(args, admin_client(args).call("GET", ACCOUNTS), ACCOUNT_COLUMNS)


def cmd_account_info(args: argparse.Namespace) -> int:
    account = admin_client(args).call("GET", f"{ACCOUNTS}/{_q(args.name)}")
    text = "\n".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                     for k, v in account.items())
    return emit(args, account, text)


def cmd_account_delete(args: argparse.Namespace) -> int:
    admin_client(args).call("DELETE", f"{ACCOUNTS}/{_q(args.name)}")
    return emit(args, {"deleted": args.name}, f"deleted account {args.name}")


# --- users ---------------------------------------------------------------------------

USER_COLUMNS = [("NAME", lambda u: u["name"], False), ("ARN", lambda u: u["arn"], False),
                ("POLICY", lambda u: "yes" if u.get("policy") else "no", False),
                ("CREATED", lambda u: u.get("created"), False)]


def cmd_user_create(args: argparse.Namespace) -> int:
    user = admin_client(args).call("POST", f"{ACCOUNTS}/{_q(args.account)}/users",
                                   body={"name": args.user})
    return emit(args, user, f"created user {user['arn']}")


def cmd_user_list(args: argparse.Namespace) -> int:
    users = admin_client(args).call("GET", f"{ACCOUNTS}/{_q(args.account)}/users")
    return emit_table(args, users, USER_COLUMNS)


def cmd_user_delete(args: argparse.Namespace) -> int:
    admin_client(args).call("DELETE", _user_path(args))
    return emit(args, {"deleted": args.user, "account": args.account},
                f"deleted user {args.user} of account {args.account}")


def cmd_policy_put(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as f:
            document = json.load(f)
    except ValueError as exc:
        raise CLIError("MalformedPolicyDocument", f"{args.file} is not JSON: {exc}") from None
    admin_client(args).call("PUT", _user_path(args, "policy"), body=document)
    return emit(args, {"account": args.account, "user": args.user, "policy": document},
                f"policy of {args.user} set from {args.file}")


def cmd_policy_get(args: argparse.Namespace) -> int:
    document = admin_client(args).call("GET", _user_path(args, "policy"))
    return emit(args, document, json.dumps(document, indent=2))


def cmd_policy_delete(args: argparse.Namespace) -> int:
    admin_client(args).call("DELETE", _user_path(args, "policy"))
    return emit(args, {"account": args.account, "user": args.user, "policy": None},
                f"policy of {args.user} removed")


# --- keys ----------------------------------------------------------------------------

KEY_COLUMNS = [("ACCESS KEY", lambda k: k["access_key"], False),
               ("ACCOUNT", lambda k: k["account"], False),
               ("USER", lambda k: k.get("user") or "(root)", False),
               ("STATUS", lambda k: k["status"], False),
               ("CREATED", lambda k: k.get("created"), False),
               ("LAST USED", lambda k: k.get("last_used") or "never", False)]


def cmd_key_create(args: argparse.Namespace) -> int:
    path = (f"{ACCOUNTS}/{_q(args.account)}/keys" if args.user is None
            else _user_path(args, "keys"))
    key = admin_client(args).call("POST", path)
    return emit(args, key, f"access key: {key['access_key']}\nsecret key: {key['secret_key']}\n"
                "(the secret is shown only now: keep it)")


def cmd_key_list(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("account", args.account), ("user", args.user)) if v}
    return emit_table(args, admin_client(args).call("GET", KEYS, query=query), KEY_COLUMNS)


def _key_change(change: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        key = admin_client(args).call("POST", f"{KEYS}/{_q(args.key)}/{change}")
        return emit(args, key, f"{key['access_key']}: {key['status']}")
    return run


def cmd_key_delete(args: argparse.Namespace) -> int:
    admin_client(args).call("DELETE", f"{KEYS}/{_q(args.key)}")
    return emit(args, {"deleted": args.key}, f"deleted access key {args.key}")


# --- parsers -------------------------------------------------------------------------

def _group(sub: Any, add: Callable[..., argparse.ArgumentParser], name: str,
           help: str, intermixed: bool = True) -> Any:
    parser = add(sub, name, help=help)
    # Intermixed parsing lets a global option sit before an optional positional;
    # it cannot hold a further level of subcommands (user policy ...).
    kind = _intermixed(type(parser)) if intermixed else type(parser)
    return parser.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION",
                                 parser_class=kind)


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``account``, ``user`` and ``key`` commands to the CLI."""
    asub = _group(sub, add, "account", "accounts (tenants): they own buckets and users")
    x = add(asub, "create", help="a new account")
    x.add_argument("name", metavar="NAME")
    x.add_argument("--email", default="", help="its email (ACL grants may name it)")
    x.set_defaults(func=cmd_account_create)
    add(asub, "list", help="every account").set_defaults(func=cmd_account_list)
    for name, func, text in (("info", cmd_account_info, "an account, its users and buckets"),
                             ("delete", cmd_account_delete,
                              "delete an account (it must own no buckets, users or keys)")):
        x = add(asub, name, help=text)
        x.add_argument("name", metavar="NAME")
        x.set_defaults(func=func)

    usub = _group(sub, add, "user", "an account's users and their identity policies",
                  intermixed=False)
    for name, func, text in (("create", cmd_user_create, "a new user in ACCOUNT"),
                             ("delete", cmd_user_delete,
                              "delete a user (its access keys must be deleted first)")):
        x = add(usub, name, help=text)
        x.add_argument("account", metavar="ACCOUNT")
        x.add_argument("user", metavar="USER")
        x.set_defaults(func=func)
    x = add(usub, "list", help="the users of ACCOUNT")
    x.add_argument("account", metavar="ACCOUNT")
    x.set_defaults(func=cmd_user_list)
    p = add(usub, "policy", help="a user's identity policy (AWS policy language)")
    psub = p.add_subparsers(dest="policy_action", required=True, metavar="ACTION",
                            parser_class=_intermixed(type(p)))
    for names, func, text in ((("put", "attach"), cmd_policy_put, "set it from FILE.json"),
                              (("get",), cmd_policy_get, "print it"),
                              (("delete", "detach"), cmd_policy_delete, "remove it")):
        x = add(psub, names[0], aliases=list(names[1:]), help=text)
        x.add_argument("account", metavar="ACCOUNT")
        x.add_argument("user", metavar="USER")
        if func is cmd_policy_put:
            x.add_argument("file", metavar="FILE.json")
        x.set_defaults(func=func)

    ksub = _group(sub, add, "key", "access keys of users (or of an account's root)")
    x = add(ksub, "create", help="a new key pair for USER of ACCOUNT (no USER: the "
            "account's root); the secret is printed only now")
    x.add_argument("account", metavar="ACCOUNT")
    x.add_argument("user", metavar="USER", nargs="?")
    x.set_defaults(func=cmd_key_create)
    x = add(ksub, "list", help="access keys, with their status and last use")
    x.add_argument("account", metavar="ACCOUNT", nargs="?")
    x.add_argument("user", metavar="USER", nargs="?")
    x.set_defaults(func=cmd_key_list)
    for name, func, text in (("disable", _key_change("disable"), "stop a key signing requests"),
                             ("enable", _key_change("enable"), "let a disabled key sign again"),
                             ("delete", cmd_key_delete, "delete a key")):
        x = add(ksub, name, help=text)
        x.add_argument("key", metavar="KEY")
        x.set_defaults(func=func)
