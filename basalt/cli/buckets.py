"""`basalt bucket ...`: a bucket's versioning, object lock and lifecycle.

Thin wrappers over the S3 API (boto3 against this Basalt, with the root
credentials): what they print is what S3 answers, and S3's errors come back as
one line with their code.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from typing import Any

from .. import tls_trust
from .common import CLIError, admin_client, emit, s3_errors_name, table

VERSIONING = {"on": "Enabled", "off": "Suspended", "suspend": "Suspended"}
OFF_NOTE = ("an S3 bucket cannot return to unversioned once versioning was enabled: "
            "'off' suspends it (existing versions are kept; new writes replace the null version)")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


def s3_client(args: argparse.Namespace):
    """boto3 for this Basalt (--endpoint), signed with the root credentials."""

    import boto3
    from botocore.config import Config
    admin = admin_client(args)
    kwargs: dict[str, Any] = {}
    verify = tls_trust.boto3_verify(admin.endpoint)
    if verify is not None:
        kwargs["verify"] = verify
    return boto3.client("s3", region_name="us-east-1", endpoint_url=admin.endpoint,
                        aws_access_key_id=admin.creds.access_key,
                        aws_secret_access_key=admin.creds.secret_key,
                        config=Config(retries={"mode": "standard", "max_attempts": 3}), **kwargs)


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _one_line(exc: Exception) -> str:
    text = re.sub(r":\s*\n\s*", ": ", str(exc).strip())
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


# --- versioning -------------------------------------------------------------------------

def _versioning(s3, name: str) -> dict[str, Any]:
    status = s3.get_bucket_versioning(Bucket=name).get("Status") or "Unversioned"
    return {"bucket": name, "status": status}


def cmd_versioning(args: argparse.Namespace) -> int:
    s3 = s3_client(args)
    with s3_errors_name(f"bucket {args.name}"):
        if args.state is not None:
            s3.put_bucket_versioning(Bucket=args.name,
                                     VersioningConfiguration={"Status": VERSIONING[args.state]})
        result = _versioning(s3, args.name)
    if args.state == "off":
        result["note"] = OFF_NOTE
        if not args.json:
            print(f"note: {OFF_NOTE}", file=sys.stderr)
    return emit(args, result, f"bucket {args.name}: versioning {result['status']}")


# --- object lock ------------------------------------------------------------------------

def _lock(s3, name: str) -> dict[str, Any]:
    result: dict[str, Any] = {"bucket": name, "enabled": False, "mode": None, "days": None,
                              "years": None}
    try:
        config = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    except Exception as exc:
        if _code(exc) == "ObjectLockConfigurationNotFoundError":
            return result
        raise
    retention = config.get("Rule", {}).get("DefaultRetention", {})
    result.update(enabled=config.get("ObjectLockEnabled") == "Enabled",
                  mode=retention.get("Mode"), days=retention.get("Days"),
                  years=retention.get("Years"))
    return result


def _lock_text(lock: dict[str, Any]) -> str:
    if not lock["enabled"]:
        return f"bucket {lock['bucket']}: object lock not enabled"
    if not lock["mode"]:
        return f"bucket {lock['bucket']}: object lock enabled, no default retention"
    period = f"{lock['days']} days" if lock["days"] else f"{lock['years']} years"
    return f"bucket {lock['bucket']}: object lock enabled, default retention {lock['mode']} {period}"


def cmd_lock(args: argparse.Namespace) -> int:
    period = args.days is not None or args.years is not None
    if period != (args.mode is not None):
        raise CLIError("UsageError", "basalt bucket lock: --mode and one of --days or --years "
                       "go together (none of them shows the configuration)")
    s3 = s3_client(args)
    with s3_errors_name(f"bucket {args.name}"):
        if args.mode is not None:
            retention: dict[str, Any] = {"Mode": args.mode}
            retention["Days" if args.days is not None else "Years"] = \
                args.days if args.days is not None else args.years
            s3.put_object_lock_configuration(Bucket=args.name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}})
        lock = _lock(s3, args.name)
    return emit(args, lock, _lock_text(lock))


# --- lifecycle --------------------------------------------------------------------------

def _read_rules(path: str) -> dict[str, Any]:
    """The LifecycleConfiguration in FILE (`aws s3api put-bucket-lifecycle-configuration`'s
    ``{"Rules": [...]}``; its --cli-input-json shape is accepted too); "-" is stdin."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError("InvalidJSON", f"{path}: not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise CLIError("InvalidJSON", f"{path}: not valid JSON: not UTF-8 text") from None
    if isinstance(doc, dict) and isinstance(doc.get("LifecycleConfiguration"), dict):
        doc = doc["LifecycleConfiguration"]
    if not isinstance(doc, dict) or not isinstance(doc.get("Rules"), list):
        raise CLIError("InvalidArgument", f'{path}: expected a JSON object {{"Rules": [...]}} '
                       "(as aws s3api put-bucket-lifecycle-configuration takes)")
    return doc


def _plain(value: Any) -> Any:
    """boto3's answer as JSON values (dates as ISO 8601, as aws-cli prints them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def _rules(s3, name: str) -> list[dict[str, Any]]:
    try:
        return _plain(s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"])
    except Exception as exc:
        if _code(exc) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _filter_text(rule: dict[str, Any]) -> str:
    if "Prefix" in rule:                         # the legacy form
        f: dict[str, Any] = {"Prefix": rule["Prefix"]}
    else:
        f = rule.get("Filter") or {}
        f = f.get("And", f)
    parts = [f"prefix={f['Prefix']}"] if f.get("Prefix") else []
    tags = f.get("Tags") or ([f["Tag"]] if f.get("Tag") else [])
    parts += [f"tag:{t['Key']}={t.get('Value', '')}" for t in tags]
    if f.get("ObjectSizeGreaterThan") is not None:
        parts.append(f"size>{f['ObjectSizeGreaterThan']}")
    if f.get("ObjectSizeLessThan") is not None:
        parts.append(f"size<{f['ObjectSizeLessThan']}")
    return " ".join(parts) or "(all)"


def _actions_text(rule: dict[str, Any]) -> str:
    parts = []
    exp = rule.get("Expiration") or {}
    if exp.get("Days"):
        parts.append(f"expire after {exp['Days']}d")
    if exp.get("Date"):
        parts.append(f"expire on {str(exp['Date'])[:10]}")
    if exp.get("ExpiredObjectDeleteMarker"):
        parts.append("remove lone delete markers")
    nc = rule.get("NoncurrentVersionExpiration") or {}
    if nc.get("NoncurrentDays"):
        keep = f", keep {nc['NewerNoncurrentVersions']}" if nc.get("NewerNoncurrentVersions") else ""
        parts.append(f"noncurrent after {nc['NoncurrentDays']}d{keep}")
    abort = rule.get("AbortIncompleteMultipartUpload") or {}
    if abort.get("DaysAfterInitiation"):
        parts.append(f"abort uploads after {abort['DaysAfterInitiation']}d")
    return "; ".join(parts)


RULE_COLUMNS = [
    ("ID", lambda r: r.get("ID"), False),
    ("STATUS", lambda r: r.get("Status"), False),
    ("FILTER", _filter_text, False),
    ("ACTIONS", _actions_text, False),
]


def cmd_lifecycle(args: argparse.Namespace) -> int:
    chosen = [x for x in (args.file is not None, args.show, args.delete) if x]
    if len(chosen) != 1:
        raise CLIError("UsageError", "basalt bucket lifecycle: give one of FILE.json, --show "
                       "or --delete")
    config = _read_rules(args.file) if args.file is not None else None
    s3 = s3_client(args)
    with s3_errors_name(f"bucket {args.name}"):
        if args.delete:
            s3.delete_bucket_lifecycle(Bucket=args.name)
            return emit(args, {"bucket": args.name, "deleted": True},
                        f"bucket {args.name}: lifecycle configuration deleted")
        if config is not None:
            try:
                s3.put_bucket_lifecycle_configuration(Bucket=args.name,
                                                      LifecycleConfiguration=config)
            except Exception as exc:
                if type(exc).__name__ == "ParamValidationError":
                    raise CLIError("InvalidArgument", f"{args.file}: {_one_line(exc)}") from None
                raise
            rules = _rules(s3, args.name)
            return emit(args, {"bucket": args.name, "rules": len(rules)},
                        f"bucket {args.name}: lifecycle configuration set "
                        f"({len(rules)} rule{'s' if len(rules) != 1 else ''})")
        rules = _rules(s3, args.name)
    # --show: the document put-bucket-lifecycle-configuration (and this command) takes.
    text = table(rules, RULE_COLUMNS) if rules else f"bucket {args.name}: no lifecycle configuration"
    return emit(args, {"Rules": rules}, text)


# --- registration -----------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _mode(text: str) -> str:
    if text.upper() not in LOCK_MODES:
        raise argparse.ArgumentTypeError(f"{text!r} is not GOVERNANCE or COMPLIANCE")
    return text.upper()


def _intermixed(base: type[argparse.ArgumentParser]) -> type[argparse.ArgumentParser]:
    """``base`` parsing options and positionals in any order, so a global option may come
    between NAME and the optional positional after it (``NAME --json on``): plain
    argparse would have decided at NAME that the optional positional was absent."""

    class Intermixed(base):  # type: ignore[misc, valid-type]
        _inner = False

        def parse_known_args(self, args=None, namespace=None):
            if self._inner:
                return super().parse_known_args(args, namespace)
            self._inner = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inner = False

    return Intermixed


def register(sub, add) -> None:
    p = add(sub, "bucket", help="a bucket's versioning, object lock and lifecycle")
    bsub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                            parser_class=_intermixed(type(p)))
    b = add(bsub, "versioning", help="turn versioning on or suspend it (no state: show it)")
    b.add_argument("name")
    b.add_argument("state", nargs="?", choices=sorted(VERSIONING),
                   help="on, suspend, or off (= suspend: S3 has no way back to unversioned)")
    b.set_defaults(func=cmd_versioning)
    b = add(bsub, "lock", help="set the default object lock retention (no options: show it)")
    b.add_argument("name")
    b.add_argument("--mode", type=_mode, metavar="GOVERNANCE|COMPLIANCE")
    period = b.add_mutually_exclusive_group()
    period.add_argument("--days", type=_positive, metavar="N")
    period.add_argument("--years", type=_positive, metavar="N")
    b.set_defaults(func=cmd_lock)
    b = add(bsub, "lifecycle", help="set a bucket's lifecycle rules from a JSON file, or "
            "--show / --delete them")
    b.add_argument("name")
    b.add_argument("file", nargs="?", metavar="FILE.json",
                   help='{"Rules": [...]} as aws s3api put-bucket-lifecycle-configuration '
                        "takes ('-' reads stdin)")
    b.add_argument("--show", action="store_true", help="print the rules (with --json: the "
                   "same document FILE.json takes)")
    b.add_argument("--delete", action="store_true", help="remove the lifecycle configuration")
    b.set_defaults(func=cmd_lifecycle)
