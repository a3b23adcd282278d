"""The master key: the root of every key Basalt keeps (KMS keys, SSE-S3 keys).

It is 32 random bytes in a file, hex on one line so it can be printed and kept
off-site. ``basalt serve --master-key-file PATH`` names it; without the flag it
is ``DATA_DIR/master.key``, generated on first start with mode 0600. Lose it
and every encrypted object and volume is lost with it: that is the point.

Nothing is encrypted with the master key directly: each use gets its own key
derived with HKDF-SHA256 (``derive``), so a key for one purpose never opens
what another sealed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

KEY_BYTES = 32
DEFAULT_FILE = "master.key"


class MasterKeyError(Exception):
    """The master key file is missing, unreadable or not a key."""


def default_path(data_dir: str) -> str:
    return os.path.join(data_dir, DEFAULT_FILE)


def parse(text: bytes) -> bytes:
    """32 key bytes from a file's content: 64 hex digits, base64, or 32 raw bytes."""
    stripped = text.strip()
    for decode in (binascii.unhexlify, lambda s: base64.b64decode(s, validate=True)):
        try:
            key = decode(stripped)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    if len(text) == KEY_BYTES and not all(32 <= b < 127 for b in text):
        return text  # raw bytes (text of that length is a mistyped key, not raw bytes)
    raise MasterKeyError(f"a master key is {KEY_BYTES} bytes: 64 hex digits, base64, "
                         f"or {KEY_BYTES} raw bytes")


def load(path: str) -> bytes:
    """The key in ``path``; refuses a file others can read."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(4096)
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist") from None
    except OSError as exc:
        raise MasterKeyError(f"master key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise MasterKeyError(f"master key file {path} is readable by others "
                             f"(mode {mode & 0o777:o}): chmod 600 it")
    try:
        return parse(text)
    except MasterKeyError as exc:
        raise MasterKeyError(f"master key file {path}: {exc}") from None


def load_or_create(path: str, new: bytes | None = None) -> bytes:
    """The key in ``path``, written there first when the file does not exist
    (``new``, or fresh random bytes).

    Written to a temporary name, fsynced, renamed into place and the directory
    fsynced: a crash leaves either no key file or a whole one, and a second
    server starting at the same moment keeps the first one's (link, not rename)."""
    if os.path.exists(path):
        return load(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = new if new is not None else os.urandom(KEY_BYTES)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails when another process made one meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return load(path)


def derive(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (HKDF-SHA256 with the purpose as info)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=b"basalt master key",
                info=purpose.encode()).derive(master)


def from_cluster_secret(secret: bytes) -> bytes:
    """The master key of a cluster whose nodes were given no key file: derived
    from the secret every node already shares, so all nodes hold the same one."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=b"basalt cluster master key",
                info=b"master key").derive(secret)


def fingerprint(master: bytes) -> str:
    """A short public check value: tells whether two servers hold the same key
    without revealing it (an HMAC of a constant, not the key's hash)."""
    return hmac.new(master, b"basalt master key check", hashlib.sha256).hexdigest()[:16]
