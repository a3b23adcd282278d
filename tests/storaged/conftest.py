
import pytest

from storaged import ObjectStore


@pytest.fixture
def roots(tmp_path):
    def make(n, name="disk"):
        return [str(tmp_path / f"{name}{i}") for i in range(n)]
    return make


@pytest.fixture
async def open_store(roots):
    """Open stores on temporary disks; closes them all at the end."""
    stores = []

    async def _open(n=4, ec=None, dirs=None, heal=False, sync=False, **kw):
        store = ObjectStore.open(dirs or roots(n), ec=ec, sync=sync, **kw)
        await store.start(heal=heal)
        stores.append(store)
        return store

    yield _open
    for store in stores:
        await store.close()
