"""The master key file and the key service: sealing, contexts, rotation, disabling,
records shared through the store and surviving the loss of disks."""

import os
import shutil
import stat

import pytest

from storaged import kms, master_key
from storaged.healing import heal_all

# --- the master key file ---------------------------------------------------------------

def test_master_key_generated_once_mode_0600(tmp_path):
    path = str(tmp_path / "data" / "master.key")
    key = master_key.load_or_create(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert master_key.load_or_create(path) == key  # not replaced on the next start
    assert open(path).read().strip() == key.hex()
    assert not [n for n in os.listdir(tmp_path / "data") if n.endswith(".tmp")]


@pytest.mark.parametrize("encode", [
    lambda k: k.hex().encode() + b"\n", lambda k: __import__("base64").b64encode(k), bytes])
def test_master_key_file_formats(tmp_path, encode):
    key = os.urandom(32)
    path = tmp_path / "k"
    path.write_bytes(encode(key))
    path.chmod(0o600)
    assert master_key.load(str(path)) == key


def test_master_key_refusals(tmp_path):
    path = tmp_path / "k"
    with pytest.raises(master_key.MasterKeyError, match="does not exist"):
        master_key.load(str(path))
    path.write_text("00" * 16)
    path.chmod(0o600)
    with pytest.raises(master_key.MasterKeyError, match="32 bytes"):
        master_key.load(str(path))
    path.write_text("11" * 32)
    path.chmod(0o644)
    with pytest.raises(master_key.MasterKeyError, match="readable by others"):
        master_key.load(str(path))


def test_derived_keys_differ_by_purpose_and_master():
    a, b = os.urandom(32), os.urandom(32)
    assert master_key.derive(a, "x") != master_key.derive(a, "y")
    assert master_key.derive(a, "x") != master_key.derive(b, "x")
    assert master_key.fingerprint(a) != master_key.fingerprint(b)
    assert a.hex()[:16] not in master_key.fingerprint(a)


# --- the key service -------------------------------------------------------------------

@pytest.fixture
async def service(open_store):
    store = await open_store(4)
    return kms.KeyService(store, os.urandom(32))


async def test_create_find_and_list(service):
    key = await service.create("backups", "for the backup bucket")
    assert key.enabled and len(key.versions) == 1
    for ref in (key.id, "backups", "alias/backups",
                f"arn:aws:kms:us-east-1:000000000000:key/{key.id}",
                "arn:aws:kms:us-east-1:000000000000:alias/backups"):
        assert (await service.find(ref)).id == key.id
    shown = key.as_dict()
    assert shown["state"] == "Enabled" and shown["arn"].endswith(key.id)
    assert key.versions[0] not in str(shown) and key.versions[0] not in repr(key)
    assert [k.name for k in await service.keys()] == ["backups"]
    with pytest.raises(kms.KMSError) as err:
        await service.create("backups")
    assert err.value.code == "AlreadyExistsException"
    with pytest.raises(kms.KMSError) as err:
        await service.find("nope")
    assert err.value.code == "NotFoundException"
    for bad in ("", "alias/x", "has space", "x" * 251):
        with pytest.raises(kms.KMSError) as err:
            await service.create(bad)
        assert err.value.code == "ValidationException"


async def test_data_keys_open_only_with_their_context(service):
    key = await service.create("k")
    dk = await service.data_key("k", {"aws:s3:arn": "arn:aws:s3:::b/o"})
    assert len(dk.plaintext) == 32 and dk.key_id == key.id
    assert dk.plaintext not in dk.sealed and "plaintext" not in repr(dk).split("sealed")[0][9:]
    assert kms.key_id_of(dk.sealed) == key.id
    assert await service.open(dk.sealed, {"aws:s3:arn": "arn:aws:s3:::b/o"}) == dk.plaintext
    for context in ({"aws:s3:arn": "arn:aws:s3:::b/other"}, None):
        with pytest.raises(kms.KMSError) as err:
            await service.open(dk.sealed, context)
        assert err.value.code == "InvalidCiphertextException"
    tampered = bytearray(dk.sealed)
    tampered[-1] ^= 1
    with pytest.raises(kms.KMSError):
        await service.open(bytes(tampered), {"aws:s3:arn": "arn:aws:s3:::b/o"})
    with pytest.raises(kms.KMSError):
        await service.open(b"garbage", None)


async def test_volume_sized_data_keys(service):
    await service.create("vol")
    dk = await service.data_key("vol", {"volume": "v"}, size=64)
    assert len(dk.plaintext) == 64
    assert await service.open(dk.sealed, {"volume": "v"}) == dk.plaintext


async def test_sse_s3_keys_need_no_record(service):
    dk = await service.data_key(None, {"o": "1"})
    assert dk.key_id == kms.SSE_S3
    assert await service.open(dk.sealed, {"o": "1"}) == dk.plaintext
    assert await service.keys() == []


async def test_rotation_keeps_old_data_keys_and_reseals(service):
    await service.create("r")
    old = await service.data_key("r")
    rotated = await service.rotate("r")
    assert len(rotated.versions) == 2 and rotated.rotated
    new = await service.data_key("r")
    assert new.sealed[19:21] == b"\x00\x01" and old.sealed[19:21] == b"\x00\x00"
    assert await service.open(old.sealed) == old.plaintext
    resealed = await service.reseal(old.sealed)
    assert resealed != old.sealed and resealed[19:21] == b"\x00\x01"
    assert await service.open(resealed) == old.plaintext


async def test_disabled_key_neither_seals_nor_opens(service):
    await service.create("d")
    dk = await service.data_key("d")
    await service.set_enabled("d", False)
    for call in (service.data_key("d"), service.open(dk.sealed)):
        with pytest.raises(kms.KMSError) as err:
            await call
        assert err.value.code == "DisabledException"
    await service.set_enabled("d", True)
    assert await service.open(dk.sealed) == dk.plaintext


async def test_default_key_made_once(service):
    first = await service.default_key()
    assert first.name == kms.DEFAULT_ALIAS
    assert (await service.default_key()).id == first.id
    assert (await service.find("alias/aws/s3")).id == first.id


async def test_another_process_sees_keys_and_another_master_does_not_open(open_store, roots):
    dirs = roots(4)
    store = await open_store(dirs=dirs)
    master = os.urandom(32)
    one = kms.KeyService(store, master)
    await one.create("shared")
    dk = await one.data_key("shared", {"c": "1"})
    two = kms.KeyService(store, master)  # a second worker: reads the records itself
    assert await two.open(dk.sealed, {"c": "1"}) == dk.plaintext
    stranger = kms.KeyService(store, os.urandom(32))
    with pytest.raises(kms.KMSError) as err:
        await stranger.open(dk.sealed, {"c": "1"})
    assert err.value.code == "KMSInternalException"
    with pytest.raises(kms.KMSError):  # SSE-S3 keys are bound to the master too
        await stranger.open((await one.data_key(None)).sealed)


async def test_keys_survive_losing_two_disks_and_heal(open_store, roots):
    dirs = roots(4)
    master = os.urandom(32)
    store = await open_store(dirs=dirs)
    service = kms.KeyService(store, master)
    await service.create("durable")
    dk = await service.data_key("durable")
    await store.close()
    for d in dirs[:2]:
        shutil.rmtree(d)
    store = await open_store(dirs=dirs)
    assert await kms.KeyService(store, master).open(dk.sealed) == dk.plaintext
    await heal_all(store)
    await store.close()
    for d in dirs[2:]:
        shutil.rmtree(d)
    store = await open_store(dirs=dirs)
    assert await kms.KeyService(store, master).open(dk.sealed) == dk.plaintext


async def test_a_server_with_another_master_key_is_refused(open_store):
    store = await open_store(4)
    master = os.urandom(32)
    await kms.KeyService(store, master).check_master()  # the first start records it
    await kms.KeyService(store, master).check_master()  # the same key: fine
    with pytest.raises(master_key.MasterKeyError, match="not the one"):
        await kms.KeyService(store, os.urandom(32)).check_master()


def test_derived_keys_are_per_purpose_and_per_master():
    master = os.urandom(32)
    one, two = kms.KeyService(None, master), kms.KeyService(None, master)
    assert one.derived_key("console") == two.derived_key("console")
    assert one.derived_key("console") != one.derived_key("other")
    assert kms.KeyService(None, os.urandom(32)).derived_key("console") != one.derived_key("console")


def test_cluster_nodes_derive_the_same_master_key(tmp_path):
    secret = b"s" * 32
    one = master_key.load_or_create(str(tmp_path / "n1" / "master.key"),
                                    master_key.from_cluster_secret(secret))
    two = master_key.load_or_create(str(tmp_path / "n2" / "master.key"),
                                    master_key.from_cluster_secret(secret))
    assert one == two and one != master_key.from_cluster_secret(b"t" * 32)
    assert one != secret[:32]
