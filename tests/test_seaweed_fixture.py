"""The ``seaweed`` / ``s3_url`` fixtures give a working S3 server and a fresh prefix."""

from __future__ import annotations

# obstore is imported inside the tests, so that without it the fixture skips them (or
# fails them on CI) instead of the module failing to import.


def test_put_get_roundtrip(s3_url: str) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store.from_url(s3_url)  # configured from the AWS_* variables
    obstore.put(store, "dir/key.bin", b"hello seaweed")
    assert bytes(obstore.get(store, "dir/key.bin").bytes()) == b"hello seaweed"
    listed = obstore.list_with_delimiter(store, "dir")
    assert [obj["path"] for obj in listed["objects"]] == ["dir/key.bin"]


def test_create_mode_refuses_existing_key(s3_url: str) -> None:
    import obstore
    import pytest
    from obstore.exceptions import AlreadyExistsError, BaseError
    from obstore.store import S3Store

    store = S3Store.from_url(s3_url)
    obstore.put(store, "key", b"first", mode="create")
    with pytest.raises(BaseError) as caught:
        obstore.put(store, "key", b"second", mode="create")
    assert isinstance(caught.value, AlreadyExistsError) or "412" in str(caught.value)
    assert bytes(obstore.get(store, "key").bytes()) == b"first"
