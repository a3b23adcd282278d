"""What every command shares: global options, output (text, tables, JSON) and errors."""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..config import DEFAULT_DATA_DIR

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
GLOBAL_OPTIONS = ("--data-dir", "--endpoint", "--json")


def global_options() -> argparse.ArgumentParser:
    """A parent parser for the top parser and every subparser, so the global
    options work before or after the subcommand. Their defaults are SUPPRESS (a
    subparser must not overwrite a value given earlier); :func:`resolve_defaults`
    fills them in after parsing."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options (before or after the command)")
    g.add_argument("--data-dir", default=argparse.SUPPRESS,
                   help="state directory (default: $BASALT_DATA_DIR, else ./basalt-data)")
    g.add_argument("--endpoint", default=argparse.SUPPRESS,
                   help=f"a running Basalt (default: $BASALT_ENDPOINT, else {DEFAULT_ENDPOINT})")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output: one JSON document on stdout")
    return p


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    if not hasattr(args, "data_dir"):
        args.data_dir = os.environ.get("BASALT_DATA_DIR") or DEFAULT_DATA_DIR
    if not hasattr(args, "endpoint"):
        args.endpoint = os.environ.get("BASALT_ENDPOINT") or DEFAULT_ENDPOINT
    if not hasattr(args, "json"):
        args.json = False
    return args


def admin_client(args: argparse.Namespace):
    from ..admin_client import AdminClient
    from ..credentials import for_client
    return AdminClient(args.endpoint, for_client(os.path.abspath(args.data_dir)))


# --- output -----------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> int:
    """`data` as JSON with --json, else `text` (when given); returns 0."""
    if args.json:
        print(json.dumps(data))
    elif text is not None:
        print(text)
    return 0


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


Column = tuple[str, Callable[[dict], Any], bool]  # header, value, right-aligned


def table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """Aligned columns under a header row (the header alone when there are no rows)."""
    cells = [[h for h, _, _ in columns]]
    cells += [["-" if (v := value(row)) is None or v == "" else str(v)
               for _, value, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if right else c.ljust(w)
                 for c, w, (_, _, right) in zip(r, widths, columns, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def emit_table(args: argparse.Namespace, rows: list[dict], columns: Sequence[Column]) -> int:
    return emit(args, rows, table(rows, columns))


# --- errors -----------------------------------------------------------------------------


class CLIError(Exception):
    """A user error the CLI reports as one line (or a JSON error)."""

    def __init__(self, code: str, message: str, exit_code: int = 2,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.exit_code = code, message, exit_code
        self.hint = hint  # what to do next, when there is something to say


S3_MEANINGS = {"NoSuchKey": "no such object", "NoSuchBucket": "no such bucket",
               "404": "not found", "NotFound": "not found", "403": "access denied",
               "AccessDenied": "access denied", "InvalidAccessKeyId": "unknown access key",
               "SignatureDoesNotMatch": "wrong secret key"}


def s3_error(exc: Exception, what: str | None = None) -> CLIError | None:
    """A CLIError for a botocore error (`what`, e.g. ``s3://b/k``, names the object)."""
    try:
        from botocore import exceptions as bex
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    prefix = f"{what}: " if what else ""
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {})
                   .get("HTTPStatusCode", "Error"))
        meaning = S3_MEANINGS.get(code) or err.get("Message") or str(exc)
        return CLIError(code, f"{prefix}{meaning} ({code})")
    if isinstance(exc, bex.EndpointConnectionError):
        return CLIError("EndpointUnreachable", f"{prefix}cannot reach {exc.kwargs.get('endpoint_url')}")
    if isinstance(exc, bex.NoCredentialsError):
        return CLIError("NoCredentials", f"{prefix}no S3 credentials (set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY)")
    if isinstance(exc, bex.BotoCoreError):
        return CLIError(type(exc).__name__, f"{prefix}{exc}")
    return None


@contextlib.contextmanager
def s3_errors_name(what: str | None) -> Iterator[None]:
    """botocore's errors name no object: raised inside, they say `what` (``s3://b/k``)."""
    try:
        yield
    except Exception as exc:
        found = s3_error(exc, what)
        if found is None:
            raise
        raise found from None


# What to do next, for the errors people meet most (printed under the message).
NEXT_STEPS = {
    "EndpointUnreachable": "is `basalt serve` running there? Start it, or point at it with "
                           "--endpoint URL (or BASALT_ENDPOINT).",
    "InvalidAccessKeyId": "check BASALT_ACCESS_KEY: `basalt key list` shows the keys "
                          "(the root key is in DATA_DIR/credentials.json).",
    "SignatureDoesNotMatch": "check BASALT_SECRET_KEY: it must be the secret of "
                             "BASALT_ACCESS_KEY.",
    "AccessDenied": "the admin API takes the root credentials (those `basalt serve` "
                    "printed, or DATA_DIR/credentials.json).",
    "NoSuchVolume": "`basalt volume list` shows the volumes.",
    "NoSuchAccount": "`basalt account list` shows the accounts.",
    "NotFoundException": "`basalt kms key list` shows the KMS keys.",
    "QuotaExceeded": "`basalt quota show` shows the limits; raise one with `basalt quota set`.",
}


def user_error(exc: BaseException) -> CLIError | None:
    """The CLIError for an exception that is the user's or the world's doing (bad
    input, an error answer, an unreachable server, a full disk), else None (a bug:
    let its traceback show)."""
    from ..admin_client import AdminError
    if isinstance(exc, CLIError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return CLIError("Interrupted", "interrupted", 130)
    if isinstance(exc, AdminError):
        text = exc.message if exc.code == "EndpointUnreachable" else (
            f"{exc.message} ({exc.code})" if exc.message else exc.code)
        return CLIError(exc.code, text, hint=NEXT_STEPS.get(exc.code))
    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno or 0, "OSError")
        name = f"{exc.filename}: " if exc.filename else ""
        return CLIError(code, f"{name}{exc.strerror or exc}")
    if isinstance(exc, http.client.HTTPException):
        return CLIError("ConnectionBroken", f"the connection to the server broke: {exc!r}")
    found = s3_error(exc) if isinstance(exc, Exception) else None
    if found is not None:
        return found
    module = type(exc).__module__ or ""
    # Basalt's own exception classes (ConfigError, BackupError, StorageError, ...)
    # carry messages meant for users; builtins (TypeError, ...) are bugs.
    if module.split(".")[0] in ("basalt", "storaged", "blockd", "gateway", "erasure",
                                "compute", "network"):
        code = getattr(exc, "code", None)
        if not isinstance(code, str):
            code = "InvalidArgument" if type(exc).__name__ == "ConfigError" \
                else type(exc).__name__
        return CLIError(code, str(exc) or type(exc).__name__)
    return None


def report(exc: CLIError, as_json: bool) -> int:
    if as_json:
        doc = {"error": exc.code, "message": exc.message}
        if exc.hint:
            doc["hint"] = exc.hint
        print(json.dumps(doc))
    else:
        print(f"basalt: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
    return exc.exit_code


def wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv
