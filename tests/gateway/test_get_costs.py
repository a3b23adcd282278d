"""What a small GET computes per request, counted (not timed): conditions are
evaluated only when the request carries one, and a version's Last-Modified is
formatted once, not per request (email.utils' formatting cost more than the rest
of the object's headers)."""

import asyncio

import pytest
from botocore.exceptions import ClientError

from gateway import conditions


@pytest.fixture
def counted(monkeypatch):
    calls = {"check": 0, "http_date": 0}
    check, http_date = conditions.check, conditions.http_date

    def check_(*args, **kwargs):
        calls["check"] += 1
        return check(*args, **kwargs)

    def http_date_(*args):
        calls["http_date"] += 1
        return http_date(*args)

    monkeypatch.setattr(conditions, "check", check_)
    monkeypatch.setattr(conditions, "http_date", http_date_)
    return calls


async def test_small_gets_skip_absent_conditions_and_format_dates_once(served, counted):
    store, s3 = served
    await store.make_bucket("b")
    put = await asyncio.to_thread(s3.put_object, Bucket="b", Key="k", Body=b"x" * 4096)
    first = await asyncio.to_thread(s3.get_object, Bucket="b", Key="k")
    for _ in range(5):
        got = await asyncio.to_thread(s3.get_object, Bucket="b", Key="k")
        assert got["Body"].read() == b"x" * 4096
        assert got["LastModified"] == first["LastModified"]
        assert got["ETag"] == put["ETag"]
    assert counted == {"check": 0, "http_date": 1}
    # a request that carries a condition still has it evaluated
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(s3.get_object, Bucket="b", Key="k", IfNoneMatch=put["ETag"])
    assert err.value.response["Error"]["Code"] == "304"
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(s3.get_object, Bucket="b", Key="k",
                                IfModifiedSince=first["LastModified"])
    assert err.value.response["Error"]["Code"] == "304"
    got = await asyncio.to_thread(s3.get_object, Bucket="b", Key="k", IfMatch=put["ETag"])
    assert got["Body"].read() == b"x" * 4096
    assert counted["check"] == 3
