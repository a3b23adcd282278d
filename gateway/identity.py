"""Who sends a request: accounts, their users, their access keys.

An account (a tenant) owns buckets; its users hold access keys and identity
policies. The root credentials of ``basalt serve`` are the root of the
``root`` account (ROOT_ACCOUNT), which is also the admin. A request signed with
a user's key is that user's; one signed with an account's root key is that
account's root (``user`` None); an unsigned one has no principal (anonymous).

The records (and the accounts' quota limits, gateway.quota) live in the engine
as settings of the system bucket
``.basalt-iam`` (a name no S3 request can reach: bucket names start with a
letter or digit), so they are replicated on a write quorum of every set's
disks, healed with the bucket records, and shared by every worker and node.
Each worker keeps a snapshot (:class:`Directory`), read again when it is a
second old, or at once when a key it does not know signs a request: a new key
works immediately, a disabled or deleted one stops working within a second.

Secret keys are sealed at rest with AES-256-GCM under a key derived (HKDF)
from the master key (storaged/master_key.py; every node of a cluster holds the
same one); the secret is shown once, when the key is created. Keys created
before the master key sealed them were sealed under a key derived from the
root secret: they still open, and the server re-seals them under the master
key when it starts (:meth:`Directory.reseal_legacy`), after which changing the
root secret no longer affects them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import string
import time
from collections.abc import Iterable
from typing import Any

from storaged import system_buckets

log = logging.getLogger("basalt.iam")

ROOT_ACCOUNT = "000000000000"
ROOT_ACCOUNT_NAME = "root"
SYSTEM_BUCKET = ".basalt-iam"
OWNER_KIND = "owner"  # bucket setting: the owning account's id
REFRESH_SECONDS = 1.0
MISS_REFRESH_SECONDS = 0.05  # an unknown key re-reads the records at most this often
LAST_USED_GRANULARITY = 60.0  # a key's last use is stored at most once a minute

_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class IdentityError(Exception):
    """A refused change of accounts, users or keys (the admin API's JSON error)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@functools.lru_cache(maxsize=4096)
def canonical_id(account: str) -> str:
    """The account's canonical user id (64 hex digits), as S3 ACLs name owners."""
    return hashlib.sha256(b"basalt-account:" + account.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Principal:
    """The identity a verified signature proves."""

    account: str                  # 12-digit account id
    account_name: str
    user: str | None = None       # None: the account's root
    access_key: str = ""
    admin: bool = False           # the server's root credentials

    @property
    def arn(self) -> str:
        if self.user is None:
            return f"arn:aws:iam::{self.account}:root"
        return f"arn:aws:iam::{self.account}:user/{self.user}"

    @property
    def canonical_id(self) -> str:
        return canonical_id(self.account)


def root_principal(access_key: str) -> Principal:
    """The admin: the root of the root account."""
    return Principal(ROOT_ACCOUNT, ROOT_ACCOUNT_NAME, None, access_key, admin=True)


async def bucket_owner(store: Any, bucket: str) -> str:
    """The id of the account that owns ``bucket`` (NoSuchBucket when there is none).
    Buckets made before accounts existed belong to the root account."""
    raw = await store.bucket_config(bucket, OWNER_KIND)
    return ROOT_ACCOUNT if raw is None else raw.decode()


async def owned_buckets(store: Any, account: str) -> list[Any]:
    """The buckets (BucketInfo) ``account`` owns; never the system bucket."""
    buckets = [b for b in await store.list_buckets() if not b.name.startswith(".")]
    owners = await asyncio.gather(*(bucket_owner(store, b.name) for b in buckets),
                                  return_exceptions=True)
    return [b for b, owner in zip(buckets, owners, strict=True) if owner == account]


# --- records -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Account:
    id: str
    name: str
    email: str = ""
    created: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email or None,
                "arn": f"arn:aws:iam::{self.id}:root", "canonical_id": canonical_id(self.id),
                "created": _iso(self.created)}


@dataclasses.dataclass(frozen=True)
class User:
    account: str
    name: str
    created: float = 0.0
    policy: str | None = None     # the identity policy's JSON text

    def as_dict(self, account_name: str) -> dict[str, Any]:
        return {"account": account_name, "account_id": self.account, "name": self.name,
                "arn": f"arn:aws:iam::{self.account}:user/{self.name}",
                "created": _iso(self.created), "policy": self.policy is not None}


@dataclasses.dataclass(frozen=True)
class AccessKey:
    access_key: str
    account: str
    user: str | None              # None: the account's root
    sealed: str                   # the secret, sealed (see Sealer)
    status: str = "Active"        # Active | Inactive
    created: float = 0.0

    def as_dict(self, account_name: str, last_used: float | None) -> dict[str, Any]:
        return {"access_key": self.access_key, "account": account_name,
                "account_id": self.account, "user": self.user, "status": self.status,
                "created": _iso(self.created),
                "last_used": _iso(last_used) if last_used else None}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _pack(record: Any) -> bytes:
    return json.dumps(dataclasses.asdict(record), sort_keys=True).encode()


class Sealer:
    """AES-256-GCM for secret keys at rest.

    New seals are keyed from the master key (``m1:`` in front); seals made
    before the master key existed are keyed from the root secret and still
    open. Keys are derived on first use: a worker that only ever sees the root
    key never loads ``cryptography`` (~7 MiB of RSS per process)."""

    MASTER = "m1:"

    def __init__(self, root_secret: str, master: bytes | None = None) -> None:
        self._root_secret, self._master = root_secret, master
        self._ciphers: dict[str, Any] = {}

    def _aead(self, kind: str) -> Any:
        cipher = self._ciphers.get(kind)
        if cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            if kind == self.MASTER:
                from storaged.master_key import derive
                key = derive(self._master, "access key secrets")
            else:
                from cryptography.hazmat.primitives import hashes
                from cryptography.hazmat.primitives.kdf.hkdf import HKDF
                key = HKDF(hashes.SHA256(), 32, salt=b"basalt-iam", info=b"access key secrets"
                           ).derive(self._root_secret.encode())
            cipher = self._ciphers[kind] = AESGCM(key)
        return cipher

    def seal(self, secret: str, access_key: str) -> str:
        kind = self.MASTER if self._master is not None else ""
        nonce = os.urandom(12)
        # The access key id is bound in: a sealed secret moved to another key fails.
        sealed = nonce + self._aead(kind).encrypt(nonce, secret.encode(), access_key.encode())
        return kind + base64.b64encode(sealed).decode()

    def open(self, sealed: str, access_key: str) -> str | None:
        """The secret, or None when another key sealed it (or it was changed)."""
        from cryptography.exceptions import InvalidTag
        kind = self.MASTER if sealed.startswith(self.MASTER) else ""
        if kind and self._master is None:
            return None
        raw = base64.b64decode(sealed[len(kind):])
        try:
            return self._aead(kind).decrypt(raw[:12], raw[12:], access_key.encode()).decode()
        except InvalidTag:
            return None

    def is_legacy(self, sealed: str) -> bool:
        """Sealed under the root secret while a master key is there to reseal it."""
        return self._master is not None and not sealed.startswith(self.MASTER)


def new_key_pair() -> tuple[str, str]:
    """An access key id (AKIA-like, 20 characters) and a 40-character secret."""
    alphabet = string.ascii_uppercase + string.digits
    access = "BK" + "".join(secrets.choice(alphabet) for _ in range(18))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/")
                     for _ in range(40))
    return access, secret


# --- the directory ---------------------------------------------------------------------

@dataclasses.dataclass
class Snapshot:
    accounts: dict[str, Account]                      # id → account
    users: dict[tuple[str, str], User]                # (account id, name) → user
    keys: dict[str, AccessKey]                        # access key id → key
    used: dict[str, float]                            # access key id → last use stored
    quotas: dict[str, bytes] = dataclasses.field(default_factory=dict)  # account id → limits

    @classmethod
    def parse(cls, configs: dict[str, bytes]) -> Snapshot:
        snap = cls({}, {}, {}, {})
        for kind, raw in configs.items():
            family, _, name = kind.partition("/")
            if family == "account":
                account = Account(**json.loads(raw))
                snap.accounts[account.id] = account
            elif family == "user":
                user = User(**json.loads(raw))
                snap.users[(user.account, user.name)] = user
            elif family == "key":
                key = AccessKey(**json.loads(raw))
                snap.keys[key.access_key] = key
            elif family == "used":
                snap.used[name] = float(raw)
            elif family == "quota":
                snap.quotas[name] = raw
        return snap


class Directory:
    """Accounts, users and keys of one store, as one worker sees them."""

    def __init__(self, store: Any, root_access: str, root_secret: str,
                 master: bytes | None = None) -> None:
        self.store = store
        self.root_access, self.root_secret = root_access, root_secret
        self.sealer = Sealer(root_secret, master)
        self.snapshot = Snapshot({}, {}, {}, {})
        self._read_at = float("-inf")
        self._secrets: dict[tuple[str, str], str] = {}  # (key, sealed) → secret
        self._refreshing: asyncio.Future | None = None
        self._used: dict[str, float] = {}  # uses seen here, not yet stored

    # reading --------------------------------------------------------------------------

    async def fresh(self, max_age: float = REFRESH_SECONDS) -> Snapshot:
        """The records, read again when older than ``max_age`` seconds. When they
        cannot be read (too few disks), requests go on with the last snapshot;
        ``fresh(0)``, which changes are made after, raises instead."""
        if time.monotonic() - self._read_at > max_age:
            try:
                await self._refresh()
            except Exception as exc:
                if max_age == 0:
                    raise
                log.warning("accounts and keys not re-read, using the last ones: %s", exc)
                self._read_at = time.monotonic()  # try again in a second, not per request
        return self.snapshot

    async def _refresh(self) -> None:
        if self._refreshing is not None:  # one read at a time; the others wait for it
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            started = time.monotonic()
            configs = await system_buckets.configs(self.store, SYSTEM_BUCKET)
            self.snapshot = Snapshot.parse(configs)
            self._read_at = started
        finally:
            self._refreshing.set_result(None)
            self._refreshing = None

    def lookup(self, access_key: str) -> tuple[str, Principal] | None:
        """(secret, principal) for a key that may sign requests, from the snapshot."""
        if access_key == self.root_access:
            return self.root_secret, root_principal(access_key)
        key = self.snapshot.keys.get(access_key)
        if key is None or key.status != "Active":
            return None
        account = self.snapshot.accounts.get(key.account)
        if account is None or (key.user is not None
                               and (key.account, key.user) not in self.snapshot.users):
            return None
        secret = self._secrets.get((access_key, key.sealed))
        if secret is None:
            secret = self.sealer.open(key.sealed, access_key)
            if secret is None:  # sealed under another root secret
                return None
            self._secrets[(access_key, key.sealed)] = secret
        return secret, Principal(account.id, account.name, key.user, access_key)

    def secret_for(self, access_key: str) -> str | None:
        found = self.lookup(access_key)
        return None if found is None else found[0]

    async def resolve(self, access_key: str) -> tuple[str, Principal] | None:
        """:meth:`lookup` after making sure an unknown key is not just new."""
        await self.fresh()
        found = self.lookup(access_key)
        if found is None and access_key and access_key != self.root_access:
            await self.fresh(MISS_REFRESH_SECONDS)
            found = self.lookup(access_key)
        return found

    def identity_policy(self, principal: Principal) -> str | None:
        """The JSON text of the user's identity policy, if it has one."""
        if principal.user is None:
            return None
        user = self.snapshot.users.get((principal.account, principal.user))
        return None if user is None else user.policy

    def account(self, name_or_id: str) -> Account:
        """An account by name or id (IdentityError 404 when there is none)."""
        for account in self.all_accounts():
            if name_or_id in (account.name, account.id):
                return account
        raise IdentityError(404, "NoSuchAccount", f"no account {name_or_id!r}")

    def account_by_id(self, account_id: str) -> Account | None:
        return next((a for a in self.all_accounts() if a.id == account_id), None)

    def account_by_email(self, email: str) -> Account | None:
        email = email.lower()
        return next((a for a in self.all_accounts() if a.email and a.email.lower() == email), None)

    def account_by_canonical_id(self, cid: str) -> Account | None:
        cid = cid.lower()
        return next((a for a in self.all_accounts() if canonical_id(a.id) == cid), None)

    def all_accounts(self) -> Iterable[Account]:
        """The root account, then every other."""
        yield Account(ROOT_ACCOUNT, ROOT_ACCOUNT_NAME)
        yield from self.snapshot.accounts.values()

    def user(self, account: Account, name: str) -> User:
        user = self.snapshot.users.get((account.id, name))
        if user is None:
            raise IdentityError(404, "NoSuchUser", f"no user {name!r} in account {account.name}")
        return user

    def users(self, account: Account) -> list[User]:
        return sorted((u for (a, _), u in self.snapshot.users.items() if a == account.id),
                      key=lambda u: u.name)

    def keys(self, account: Account | None = None, user: str | None = None) -> list[AccessKey]:
        return sorted((k for k in self.snapshot.keys.values()
                       if (account is None or k.account == account.id)
                       and (user is None or k.user == user)),
                      key=lambda k: (k.account, k.user or "", k.created))

    def last_used(self, access_key: str) -> float | None:
        return max(self._used.get(access_key, 0.0),
                   self.snapshot.used.get(access_key, 0.0)) or None

    # last use ------------------------------------------------------------------------

    def note_use(self, access_key: str) -> None:
        """Remember a key's use; :meth:`store_uses` writes it down now and then."""
        if access_key != self.root_access:
            self._used[access_key] = time.time()

    async def store_uses(self) -> None:
        """Store the uses seen here that are newer than the stored ones by a minute."""
        for key, when in list(self._used.items()):
            if when - self.snapshot.used.get(key, 0.0) >= LAST_USED_GRANULARITY \
                    and key in self.snapshot.keys:
                await self._put(f"used/{key}", str(when).encode())
                self.snapshot.used[key] = when

    async def keep_uses(self, every: float = 15.0) -> None:
        """Store the keys' last uses now and then, for as long as it runs."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.store_uses()
            except Exception as exc:  # a store without quorum now: next time
                log.warning("could not store access key uses: %s", exc)

    # changing -------------------------------------------------------------------------

    async def _put(self, kind: str, value: bytes | None) -> None:
        await system_buckets.set_config(self.store, SYSTEM_BUCKET, kind, value)

    async def _changed(self) -> Snapshot:
        self._read_at = float("-inf")
        return await self.fresh()

    async def create_account(self, name: str, email: str = "") -> Account:
        if not _NAME.fullmatch(name):
            raise IdentityError(400, "InvalidArgument",
                                "account names are 1-64 letters, digits and +=,.@_-")
        if email and not _EMAIL.fullmatch(email):
            raise IdentityError(400, "InvalidArgument", f"not an email address: {email!r}")
        snap = await self.fresh(0)
        if any(a.name == name for a in self.all_accounts()):
            raise IdentityError(409, "EntityAlreadyExists", f"account {name!r} already exists")
        if email and self.account_by_email(email) is not None:
            raise IdentityError(409, "EntityAlreadyExists",
                                f"an account with email {email!r} already exists")
        ids = {a.id for a in self.all_accounts()}
        account_id = ROOT_ACCOUNT
        while account_id in ids:
            account_id = "".join(secrets.choice(string.digits) for _ in range(12))
        account = Account(account_id, name, email, time.time())
        await self._put(f"account/{account_id}", _pack(account))
        snap = await self._changed()
        # Two admins creating one name at once: the later record stays; both see it.
        if [a.id for a in snap.accounts.values() if a.name == name] != [account_id]:
            await self._put(f"account/{account_id}", None)
            raise IdentityError(409, "EntityAlreadyExists", f"account {name!r} already exists")
        return account

    async def delete_account(self, name: str, owned_buckets: list[str]) -> None:
        account = self.account(name)
        if account.id == ROOT_ACCOUNT:
            raise IdentityError(409, "DeleteConflict", "the root account cannot be deleted")
        if self.users(account) or self.keys(account):
            raise IdentityError(409, "DeleteConflict",
                                f"account {name} still has users or keys: delete them first")
        if owned_buckets:
            raise IdentityError(409, "DeleteConflict",
                                f"account {name} still owns buckets: {', '.join(owned_buckets)}")
        await self._put(f"account/{account.id}", None)
        await self._changed()

    async def create_user(self, account_name: str, name: str) -> tuple[Account, User]:
        await self.fresh(0)
        account = self.account(account_name)
        if not _NAME.fullmatch(name):
            raise IdentityError(400, "InvalidArgument",
                                "user names are 1-64 letters, digits and +=,.@_-")
        if (account.id, name) in self.snapshot.users:
            raise IdentityError(409, "EntityAlreadyExists",
                                f"user {name!r} already exists in account {account.name}")
        user = User(account.id, name, time.time())
        await self._put(f"user/{account.id}/{name}", _pack(user))
        await self._changed()
        return account, user

    async def delete_user(self, account_name: str, name: str) -> None:
        await self.fresh(0)
        account = self.account(account_name)
        self.user(account, name)
        if self.keys(account, name):
            raise IdentityError(409, "DeleteConflict",
                                f"user {name} still has access keys: delete them first")
        await self._put(f"user/{account.id}/{name}", None)
        await self._changed()

    async def set_user_policy(self, account_name: str, name: str, policy: str | None) -> None:
        await self.fresh(0)
        account = self.account(account_name)
        user = self.user(account, name)
        await self._put(f"user/{account.id}/{name}",
                        _pack(dataclasses.replace(user, policy=policy)))
        await self._changed()

    async def create_key(self, account_name: str, user: str | None) -> tuple[AccessKey, str]:
        """A new active key and its secret (returned only here)."""
        await self.fresh(0)
        account = self.account(account_name)
        if user is not None:
            self.user(account, user)
        access, secret = new_key_pair()
        key = AccessKey(access, account.id, user, self.sealer.seal(secret, access),
                        "Active", time.time())
        await self._put(f"key/{access}", _pack(key))
        await self._changed()
        return key, secret

    def key(self, access_key: str) -> AccessKey:
        key = self.snapshot.keys.get(access_key)
        if key is None:
            raise IdentityError(404, "NoSuchKey", f"no access key {access_key}")
        return key

    async def set_key_status(self, access_key: str, status: str) -> AccessKey:
        await self.fresh(0)
        key = dataclasses.replace(self.key(access_key), status=status)
        await self._put(f"key/{access_key}", _pack(key))
        await self._changed()
        return key

    async def reseal_legacy(self) -> int:
        """Seal again under the master key every secret still sealed under the
        root secret (from before the master key sealed them); returns how many.
        A secret that does not open (another root secret) is left as it is."""
        await self.fresh(0)
        count = 0
        for key in list(self.snapshot.keys.values()):
            if not self.sealer.is_legacy(key.sealed):
                continue
            secret = self.sealer.open(key.sealed, key.access_key)
            if secret is None:
                continue
            await self._put(f"key/{key.access_key}", _pack(dataclasses.replace(
                key, sealed=self.sealer.seal(secret, key.access_key))))
            count += 1
        if count:
            await self._changed()
        return count

    async def set_account_quota(self, account_id: str, limits: bytes | None) -> None:
        """Store an account's quota limits (gateway.quota's form; None: none)."""
        await self._put(f"quota/{account_id}", limits)
        await self._changed()

    async def delete_key(self, access_key: str) -> None:
        await self.fresh(0)
        self.key(access_key)
        await self._put(f"key/{access_key}", None)
        await self._put(f"used/{access_key}", None)
        await self._changed()
