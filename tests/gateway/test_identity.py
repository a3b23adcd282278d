"""gateway.identity: sealed secrets, the directory of accounts, users and keys."""

from __future__ import annotations

import asyncio

import pytest

from gateway.identity import (
    MISS_REFRESH_SECONDS,
    ROOT_ACCOUNT,
    SYSTEM_BUCKET,
    Directory,
    IdentityError,
    Sealer,
    canonical_id,
)
from storaged import BucketExists, NoSuchBucket, ReadQuorumError


class FakeStore:
    """Bucket settings in a dict, as ObjectStore keeps them (system bucket included)."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.broken = False

    async def bucket_configs(self, name: str) -> dict[str, bytes]:
        if self.broken:
            raise ReadQuorumError("too few disks")
        return dict(self.buckets.get(name, {}))

    async def set_bucket_config(self, name: str, kind: str, value: bytes | None) -> None:
        if name not in self.buckets:
            raise NoSuchBucket(name)
        if value is None:
            self.buckets[name].pop(kind, None)
        else:
            self.buckets[name][kind] = value

    async def make_bucket(self, name: str) -> None:
        if name in self.buckets:
            raise BucketExists(name)
        self.buckets[name] = {}


@pytest.fixture
def directory():
    return Directory(FakeStore(), "ROOTKEY", "root-secret")


def test_sealed_secrets_open_only_for_their_key():
    sealer = Sealer("root-secret")
    sealed = sealer.seal("s3cr3t", "AKID1")
    assert "s3cr3t" not in sealed
    assert sealer.open(sealed, "AKID1") == "s3cr3t"
    assert sealer.open(sealed, "AKID2") is None            # moved to another key
    assert Sealer("other-root").open(sealed, "AKID1") is None  # another root secret


def test_master_key_seals_and_root_secret_seals_still_open():
    master = bytes(range(32))
    sealer = Sealer("root-secret", master)
    sealed = sealer.seal("s3cr3t", "AKID1")
    assert sealed.startswith(Sealer.MASTER) and not sealer.is_legacy(sealed)
    assert Sealer("another-root", master).open(sealed, "AKID1") == "s3cr3t"
    assert Sealer("root-secret", bytes(32)).open(sealed, "AKID1") is None  # another master
    assert Sealer("root-secret").open(sealed, "AKID1") is None       # no master key here
    legacy = Sealer("root-secret").seal("old", "AKID2")
    assert sealer.is_legacy(legacy) and sealer.open(legacy, "AKID2") == "old"


async def test_legacy_secrets_are_resealed_under_the_master_key():
    store, master = FakeStore(), bytes(range(32))
    old = Directory(store, "ROOTKEY", "root-secret")
    await old.create_account("acme")
    key, secret = await old.create_key("acme", None)
    assert not key.sealed.startswith(Sealer.MASTER)
    new = Directory(store, "ROOTKEY", "root-secret", master)
    assert await new.reseal_legacy() == 1
    assert await new.reseal_legacy() == 0
    resealed = new.key(key.access_key).sealed
    assert resealed.startswith(Sealer.MASTER)
    # the root secret no longer matters to it; the master key does
    rotated = Directory(store, "ROOTKEY", "a-new-root-secret", master)
    await rotated.fresh(0)
    assert rotated.secret_for(key.access_key) == secret
    await new.create_account("beta")
    fresh, fresh_secret = await new.create_key("beta", None)
    assert fresh.sealed.startswith(Sealer.MASTER)
    assert rotated.secret_for(fresh.access_key) is None  # not in its snapshot yet
    await rotated.fresh(0)
    assert rotated.secret_for(fresh.access_key) == fresh_secret


async def test_accounts_users_keys(directory):
    acme = await directory.create_account("acme", "ops@acme.example")
    assert len(acme.id) == 12 and acme.id != ROOT_ACCOUNT
    assert directory.account("acme") == acme and directory.account(acme.id) == acme
    assert directory.account_by_email("OPS@acme.example") == acme
    assert directory.account_by_canonical_id(canonical_id(acme.id)) == acme
    with pytest.raises(IdentityError) as err:
        await directory.create_account("acme")
    assert err.value.code == "EntityAlreadyExists"
    with pytest.raises(IdentityError) as err:
        await directory.create_account("bad name")
    assert err.value.status == 400
    await directory.create_user("acme", "alice")
    key, secret = await directory.create_key("acme", "alice")
    found = directory.lookup(key.access_key)
    assert found is not None and found[0] == secret
    assert found[1].account == acme.id and found[1].user == "alice"
    assert found[1].arn == f"arn:aws:iam::{acme.id}:user/alice"
    # The stored record holds no clear secret.
    stored = directory.store.buckets[SYSTEM_BUCKET][f"key/{key.access_key}"]
    assert secret.encode() not in stored
    await directory.set_key_status(key.access_key, "Inactive")
    assert directory.lookup(key.access_key) is None
    await directory.set_key_status(key.access_key, "Active")
    with pytest.raises(IdentityError) as err:
        await directory.delete_user("acme", "alice")
    assert err.value.code == "DeleteConflict"
    await directory.delete_key(key.access_key)
    assert directory.lookup(key.access_key) is None
    await directory.delete_user("acme", "alice")
    await directory.delete_account("acme", [])
    with pytest.raises(IdentityError):
        directory.account("acme")


async def test_root_key_and_root_account(directory):
    secret, principal = directory.lookup("ROOTKEY")
    assert secret == "root-secret" and principal.admin and principal.account == ROOT_ACCOUNT
    with pytest.raises(IdentityError) as err:
        await directory.delete_account("root", [])
    assert err.value.code == "DeleteConflict"


async def test_an_account_owning_buckets_is_not_deleted(directory):
    await directory.create_account("globex")
    with pytest.raises(IdentityError) as err:
        await directory.delete_account("globex", ["globex-data"])
    assert "globex-data" in err.value.message


async def test_other_workers_see_changes_after_a_refresh(directory):
    other = Directory(directory.store, "ROOTKEY", "root-secret")
    await other.fresh()
    await directory.create_account("initech")
    key, _ = await directory.create_key("initech", None)
    assert other.lookup(key.access_key) is None          # its snapshot is older
    await asyncio.sleep(MISS_REFRESH_SECONDS)            # (unknown keys re-read at most this often)
    assert (await other.resolve(key.access_key)) is not None  # an unknown key re-reads


async def test_unreadable_records_keep_the_last_snapshot(directory):
    await directory.create_account("umbrella")
    key, _ = await directory.create_key("umbrella", None)
    directory.store.broken = True
    directory._read_at = float("-inf")
    await directory.fresh()                               # logs, does not raise
    assert directory.lookup(key.access_key) is not None
    with pytest.raises(ReadQuorumError):
        await directory.fresh(0)                          # a change must see the truth
