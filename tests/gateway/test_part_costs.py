"""What an UploadPart asks the disks, counted (not timed): the upload's record
is read once per part, by the gateway's check, not again by the store (on a
cluster every such read is a query to each other node holding a disk)."""

import asyncio

import pytest
from botocore.exceptions import ClientError

from storaged.erasure_set import ErasureSet

MIB = 1 << 20


@pytest.fixture
def upload_reads(monkeypatch):
    reads = []
    vote = ErasureSet.vote

    async def counted(self, query, *args):
        if query == "get" and args[0] == b"uploads":
            reads.append(args[1])
        return await vote(self, query, *args)

    monkeypatch.setattr(ErasureSet, "vote", counted)
    return reads


async def test_each_part_reads_its_upload_once(served, upload_reads):
    store, s3 = served
    await store.make_bucket("b")
    await asyncio.to_thread(s3.put_object, Bucket="b", Key="src", Body=b"c" * MIB)
    up = await asyncio.to_thread(s3.create_multipart_upload, Bucket="b", Key="k")
    upload_id = up["UploadId"]
    parts = [bytes([n]) * (5 * MIB) for n in range(1, 4)]
    done = []
    for n, body in enumerate(parts, 1):
        got = await asyncio.to_thread(s3.upload_part, Bucket="b", Key="k", PartNumber=n,
                                      UploadId=upload_id, Body=body)
        done.append({"PartNumber": n, "ETag": got["ETag"]})
    got = await asyncio.to_thread(s3.upload_part_copy, Bucket="b", Key="k", PartNumber=4,
                                  UploadId=upload_id, CopySource="b/src")
    done.append({"PartNumber": 4, "ETag": got["CopyPartResult"]["ETag"]})
    assert len(upload_reads) == 4, upload_reads
    await asyncio.to_thread(s3.complete_multipart_upload, Bucket="b", Key="k",
                            UploadId=upload_id, MultipartUpload={"Parts": done})
    body = await asyncio.to_thread(lambda: s3.get_object(Bucket="b", Key="k")["Body"].read())
    assert body == b"".join(parts) + b"c" * MIB


async def test_a_part_of_an_aborted_upload_is_refused(served):
    store, s3 = served
    await store.make_bucket("b")
    up = await asyncio.to_thread(s3.create_multipart_upload, Bucket="b", Key="k")
    await asyncio.to_thread(s3.abort_multipart_upload, Bucket="b", Key="k",
                            UploadId=up["UploadId"])
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(s3.upload_part, Bucket="b", Key="k", PartNumber=1,
                                UploadId=up["UploadId"], Body=b"x" * MIB)
    assert err.value.response["Error"]["Code"] == "NoSuchUpload"
