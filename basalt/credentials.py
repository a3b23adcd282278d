"""The root credentials: from the environment, else stored in the data dir.

``basalt serve`` generates a pair once when none is given, stores it in
``credentials.json`` (mode 0600) and prints it; the other commands read it
from there when ``BASALT_ACCESS_KEY`` / ``BASALT_SECRET_KEY`` are unset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import string

from .config import ConfigError

FILE = "credentials.json"


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def from_env() -> Credentials | None:
    access, secret = os.environ.get("BASALT_ACCESS_KEY"), os.environ.get("BASALT_SECRET_KEY")
    if access and secret:
        return Credentials(access, secret)
    if access or secret:
        raise ConfigError("set both BASALT_ACCESS_KEY and BASALT_SECRET_KEY, or neither")
    return None


def load(data_dir: str) -> Credentials | None:
    try:
        with open(os.path.join(data_dir, FILE), encoding="utf-8") as f:
            d = json.load(f)
        return Credentials(d["access_key"], d["secret_key"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{os.path.join(data_dir, FILE)} is damaged: {exc}") from None


def generate() -> Credentials:
    alphabet = string.ascii_uppercase + string.digits
    access = "BS" + "".join(secrets.choice(alphabet) for _ in range(18))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/")
                     for _ in range(40))
    return Credentials(access, secret)


def store(data_dir: str, creds: Credentials) -> None:
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, FILE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_key": creds.access_key, "secret_key": creds.secret_key}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def for_server(data_dir: str) -> tuple[Credentials, bool]:
    """(credentials, newly generated) for `basalt serve`."""
    env = from_env()
    if env is not None:
        return env, False
    stored = load(data_dir)
    if stored is not None:
        return stored, False
    creds = generate()
    store(data_dir, creds)
    return creds, True


def for_client(data_dir: str) -> Credentials:
    """Credentials for commands that talk to a running server."""
    creds = from_env() or load(data_dir)
    if creds is None:
        raise ConfigError("no credentials: set BASALT_ACCESS_KEY and BASALT_SECRET_KEY "
                          f"(or run commands where {os.path.join(data_dir, FILE)} is)")
    return creds
