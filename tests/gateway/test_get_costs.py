"""What a small GET computes per request, counted (not timed): conditions are
evaluated only when the request carries one, and a version's Last-Modified is
formatted once, not per request (email.utils' formatting cost more than the rest
of the object's headers)."""

import asyncio

import pytest
from botocore.exceptions import ClientError

from gateway import conditions

AK, SK = "AKIDCOSTS", "costs-secret"


@pytest.fixture
async def served(tmp_path, aiohttp_server):
    import boto3
    from botocore.config import Config

    from gateway import Gateway
    from gateway.request import GatewayConfig
    from storaged import ObjectStore
    store = ObjectStore.open([str(tmp_path / f"d{i}") for i in range(4)], sync=False)
    await store.start(heal=False)
    server = await aiohttp_server(Gateway(store, GatewayConfig(credentials={AK: SK})).app())
    s3 = boto3.client("s3", endpoint_url=str(server.make_url("")).rstrip("/"),
                      aws_access_key_id=AK, aws_secret_access_key=SK, region_name="us-east-1",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    yield store, s3
    await server.close()
    await store.close()


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
