"""Who sends a request: accounts, their users, and the principal a key proves.

An account (a tenant) owns buckets; its users hold access keys. The root
credentials of ``basalt serve`` are the root of the ``root`` account
(ROOT_ACCOUNT), which is also the admin. A request signed with a user's key
is that user's; one signed with the root credentials is the root account's
root (``user`` None); an unsigned one has no principal (anonymous).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

ROOT_ACCOUNT = "000000000000"
ROOT_ACCOUNT_NAME = "root"


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


OWNER_KIND = "owner"  # bucket setting: the owning account's id


async def bucket_owner(store: Any, bucket: str) -> str:
    """The id of the account that owns ``bucket`` (NoSuchBucket when there is none).
    Buckets made before accounts existed belong to the root account."""
    raw = await store.bucket_config(bucket, OWNER_KIND)
    return ROOT_ACCOUNT if raw is None else raw.decode()
