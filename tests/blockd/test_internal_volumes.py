"""Images' internal volumes (hidden, protected, deleted with the image) and the
"has snapshots" refusal that names the snapshots, in-process."""

import os

import pytest
from volume_helpers import open_manager

from blockd import VolumeError, VolumeManager, images
from blockd.manager import InternalVolume, VolumeHasSnapshots
from blockd.pool import CHUNK


async def put_image(store, name: str, data: bytes) -> None:
    if await store.bucket_info(images.BUCKET) is None:
        await store.make_bucket(images.BUCKET)

    async def body():
        yield data

    await store.put_object(images.BUCKET, name, body(), size=len(data))


async def test_image_volumes_are_hidden_protected_and_deleted_with_the_image(dirs):
    store, vm = await open_manager(dirs)
    try:
        data = os.urandom(2 * CHUNK) + bytes(2 * CHUNK)
        await put_image(store, "deb", data)
        vol = await images.volume_from_image(vm, store, "deb", "vm1")
        base = vm.records["vm1"].origin.partition("@")[0]
        assert base.startswith("image.deb.") and f"{base}@base" in vm.records
        # hidden from listings and the NBD export list; still there on request
        assert [v.name for v in vm.list(snapshots=True)] == ["vm1"]
        assert {v.name for v in vm.list(True, internal=True)} == {"vm1", base, f"{base}@base"}
        assert await vm.names() == ["vm1"] and [n for n, _ in await vm.listing()] == ["vm1"]
        assert (await vm.lookup(base)).read_only  # never written over NBD
        assert await (await vm.lookup("vm1")).pread(0, len(data)) == data
        assert vol.size == len(data)
        # users cannot change them, nor make volumes with their names
        for attempt in (vm.delete(base), vm.delete(f"{base}@base"), vm.resize(base, 8 * CHUNK),
                        vm.snapshot(base, "mine"), vm.rollback(f"{base}@base"),
                        vm.create(base.replace("deb", "other"), CHUNK),
                        vm.clone("vm1@x", base.replace("deb", "x"))):
            with pytest.raises(InternalVolume, match="internal to image .*; use basalt image "
                               "delete"):
                await attempt
        # a volume made from the image blocks its deletion, by name
        with pytest.raises(images.ImageInUse, match="image deb is used by volumes vm1"):
            await images.delete_image(vm, store, "deb")
        await vm.delete("vm1")
        result = await images.delete_image(vm, store, "deb")
        assert result["object_deleted"] and result["bases_deleted"] == [base]
        assert not any(n.startswith("image.") for n in vm.records)
        assert await store.resolve(images.BUCKET, "deb") is None
        with pytest.raises(VolumeError, match="image deb does not exist"):
            await images.delete_image(vm, store, "deb")
    finally:
        await vm.close()
        await store.close()


async def test_stale_bases_of_a_replaced_image_are_dropped_when_unused(dirs):
    store, vm = await open_manager(dirs)
    try:
        await put_image(store, "img", os.urandom(CHUNK))
        await images.volume_from_image(vm, store, "img", "old-user")
        await put_image(store, "img", os.urandom(CHUNK))  # replaced: a new ETag
        await images.volume_from_image(vm, store, "img", "new-user")
        bases = images.usage(vm)["img"]["bases"]
        assert len(bases) == 2 and images.usage(vm)["img"]["volumes"] == ["new-user", "old-user"]
        # the old base is still used: kept
        assert (await images.delete_image(vm, store, "img", stale_only=True))[
            "bases_deleted"] == []
        await vm.delete("old-user")
        dropped = (await images.delete_image(vm, store, "img", stale_only=True))["bases_deleted"]
        assert len(dropped) == 1 and vm.records["new-user"].origin.partition("@")[0] not in dropped
        assert await store.resolve(images.BUCKET, "img") is not None
    finally:
        await vm.close()
        await store.close()


async def test_has_snapshots_names_them_and_the_backup_target(dirs):
    store, vm = await open_manager(dirs)
    try:
        await vm.create("vm1", 4 * CHUNK)
        await vm.snapshot("vm1", "before")
        await vm.snapshot("vm1", "backup-0123abcd-20261201T000000Z-0001", note="s3://b/p")
        await vm.close()
        vm = VolumeManager(store)
        await vm.start()  # the note is kept with the snapshot
        with pytest.raises(VolumeHasSnapshots) as exc:
            await vm.delete("vm1")
        message = exc.value.message
        assert message.startswith("volume vm1 has snapshots: vm1@before (delete it first), "
                                  "vm1@backup-0123abcd-20261201T000000Z-0001 (kept by backups "
                                  "to s3://b/p")
        assert "basalt volume delete vm1@backup-0123abcd-20261201T000000Z-0001" in message
        # backup snapshots are snapshots: listed with them, hidden without
        assert [v.name for v in vm.list()] == ["vm1"]
        assert len(vm.list(snapshots=True)) == 3
        await vm.delete("vm1@before")
        await vm.delete("vm1@backup-0123abcd-20261201T000000Z-0001")
        await vm.delete("vm1")
    finally:
        await vm.close()
        await store.close()
