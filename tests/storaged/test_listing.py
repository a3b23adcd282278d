"""Listing: prefix, delimiter, start-after, max-keys, continuation, quorum."""

import random

import pytest

from storaged import NoSuchBucket

from .helpers import chunks


async def page_all(store, bucket, prefix="", delimiter="", max_keys=1000):
    """Follow continuation like a client would; returns (keys, prefixes, pages)."""
    keys, prefixes, pages, after = [], [], 0, ""
    while True:
        page = await store.list_objects(bucket, prefix, delimiter, after, max_keys)
        pages += 1
        keys += [o.key for o in page.objects]
        prefixes += page.prefixes
        if not page.truncated:
            return keys, prefixes, pages
        assert page.next_marker
        after = page.next_marker


@pytest.fixture
async def tree(open_store):
    store = await open_store()
    await store.make_bucket("t")
    names = [f"docs/{i:03d}.txt" for i in range(30)] + \
        [f"img/{y}/{i}.png" for y in (2023, 2024) for i in range(5)] + \
        ["readme", "a", "a/", "a/b", "a/b/c", "z-last", "docs.txt"]
    random.Random(1).shuffle(names)
    for name in names:
        await store.put_object("t", name, chunks(name.encode()))
    return store, sorted(names)


async def test_full_listing_is_sorted(tree):
    store, names = tree
    keys, prefixes, _ = await page_all(store, "t")
    assert keys == names and prefixes == []


async def test_prefix_and_delimiter(tree):
    store, names = tree
    keys, prefixes, _ = await page_all(store, "t", delimiter="/")
    assert keys == ["a", "docs.txt", "readme", "z-last"]
    assert prefixes == ["a/", "docs/", "img/"]
    keys, prefixes, _ = await page_all(store, "t", prefix="img/", delimiter="/")
    assert keys == [] and prefixes == ["img/2023/", "img/2024/"]
    keys, prefixes, _ = await page_all(store, "t", prefix="a/", delimiter="/")
    assert keys == ["a/", "a/b"] and prefixes == ["a/b/"]
    keys, _, _ = await page_all(store, "t", prefix="docs/01")
    assert keys == [f"docs/{i:03d}.txt" for i in range(10, 20)]


@pytest.mark.parametrize("max_keys", [1, 2, 3, 7, 1000])
async def test_pagination_matches_single_page(tree, max_keys):
    store, names = tree
    keys, _, pages = await page_all(store, "t", max_keys=max_keys)
    assert keys == names
    assert pages == -(-len(names) // max_keys)  # the last page is never an empty one
    keys, prefixes, _ = await page_all(store, "t", delimiter="/", max_keys=max_keys)
    assert keys == ["a", "docs.txt", "readme", "z-last"]
    assert prefixes == ["a/", "docs/", "img/"]


async def test_start_after(tree):
    store, names = tree
    page = await store.list_objects("t", after="docs/025.txt")
    assert [o.key for o in page.objects] == [n for n in names if n > "docs/025.txt"]
    page = await store.list_objects("t", after="zzz")
    assert page.objects == [] and not page.truncated


async def test_exact_page_boundary_is_not_truncated(open_store):
    store = await open_store()
    await store.make_bucket("b")
    for i in range(4):
        await store.put_object("b", f"k{i}", chunks(b"x"))
    page = await store.list_objects("b", max_keys=4)
    assert len(page.objects) == 4 and not page.truncated
    page = await store.list_objects("b", max_keys=3)
    assert page.truncated and page.next_marker == "k2"


async def test_listing_survives_lost_disks_and_hides_minority_records(open_store, roots):
    dirs = roots(4)
    store = await open_store(dirs=dirs)
    await store.make_bucket("b")
    for i in range(20):
        await store.put_object("b", f"k{i:02d}", chunks(b"x"))
    # A record only one disk holds (a write that never reached quorum) is not listed.
    from storaged.metadb import PutObject
    store.disks[0].commit_now([PutObject("b", "stray", store.disks[0].get_object("b", "k00"))])
    keys, _, _ = await page_all(store, "b")
    assert keys == [f"k{i:02d}" for i in range(20)]
    # Two disks offline (2+2): everything is still listed.
    store.disks[1].close()
    store.disks[2].close()
    keys, _, _ = await page_all(store, "b", max_keys=6)
    assert keys == [f"k{i:02d}" for i in range(20)]


async def test_listing_unknown_bucket(open_store):
    store = await open_store()
    with pytest.raises(NoSuchBucket):
        await store.list_objects("nope")
