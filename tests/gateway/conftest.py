"""Fixtures shared by the gateway's tests."""

import pytest
from s3_testkit import served_gateway


@pytest.fixture
async def served(tmp_path, aiohttp_server):
    """(store, boto3 client) of an in-process gateway on four disks."""
    async with served_gateway(tmp_path, aiohttp_server) as pair:
        yield pair
