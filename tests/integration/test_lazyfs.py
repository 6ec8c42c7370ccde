"""The LazyFS test filesystem (tests/support/lazyfs.py) itself, mounted for real: what a power
cut keeps (exactly what was synced, by the rules its docstring gives) and that nats-server runs
on it. tests/e2e/test_power_loss.py relies on each of these.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from logstream.shared.nats_link import ensure_stream
from logstream.shared.nats_names import STREAM_NAME
from tests.support.lazyfs import CHUNK, FuseUnavailable, LazyFs
from tests.support.nats_source import connect_as, embedded_for_tests, free_port


@pytest.fixture
def mount(tmp_path):
    """``mount()`` mounts LazyFS on ``tmp_path/disk`` at ``tmp_path/mnt`` (a later call: again,
    after a crash); every mount is gone at teardown."""
    made: list[LazyFs] = []

    def mount_again(**options) -> LazyFs:
        try:
            made.append(LazyFs(tmp_path / "mnt", tmp_path / "disk", **options).mount())
        except FuseUnavailable as missing:
            pytest.fail(str(missing))
        return made[-1]

    yield mount_again
    for lazyfs in reversed(made):
        lazyfs.close()


def write(path: Path, data: bytes, *, sync: bool = False, flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``, by relative path."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def test_an_unsynced_write_is_read_back_and_gone_after_a_crash(mount, tmp_path):
    lazyfs = mount()
    (lazyfs.mountpoint / "dir").mkdir()
    write(lazyfs.mountpoint / "dir" / "file", b"not synced")

    assert (lazyfs.mountpoint / "dir" / "file").read_bytes() == b"not synced"
    assert tree(tmp_path / "disk") == {}, "nothing reaches the disk before a sync"
    lazyfs.crash()

    assert tree(tmp_path / "disk") == {}
    assert tree(mount().mountpoint) == {}


def test_an_fsynced_file_survives_with_its_entry_and_what_came_after_does_not(mount, tmp_path):
    lazyfs = mount()
    (lazyfs.mountpoint / "a" / "b").mkdir(parents=True)
    write(lazyfs.mountpoint / "a" / "b" / "file", b"synced", sync=True)
    with open(lazyfs.mountpoint / "a" / "b" / "file", "ab") as later:
        later.write(b" and more")
    write(lazyfs.mountpoint / "a" / "other", b"never synced")
    lazyfs.crash()

    # The file's fsync made its name durable, and its directories' names, not their siblings.
    expected = {"a": None, "a/b": None, "a/b/file": b"synced"}
    assert tree(tmp_path / "disk") == expected
    assert tree(mount().mountpoint) == expected


def test_o_sync_writes_are_durable_as_they_return(mount, tmp_path):
    lazyfs = mount()
    write(lazyfs.mountpoint / "log", b"each write synced", flags=os.O_SYNC)
    lazyfs.crash()

    assert tree(tmp_path / "disk") == {"log": b"each write synced"}


def test_the_disk_holds_exactly_the_bytes_of_the_last_sync_of_a_rewritten_file(mount, tmp_path):
    """Writes within and across chunks, truncations and extensions, synced now and then: after
    each sync the disk holds the file as the mount shows it, and after the crash as it was at its
    last sync (the dirty-chunk bookkeeping is exact, not merely right for the final state)."""
    rng = random.Random(20260101)
    lazyfs = mount()
    path, on_disk = lazyfs.mountpoint / "file", tmp_path / "disk" / "file"
    live = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for step in range(400):
            if rng.random() < 0.2:
                length = rng.randrange(0, 5 * CHUNK)
                os.ftruncate(fd, length)
                live = live[:length] + bytearray(max(0, length - len(live)))
            else:
                offset = rng.randrange(0, 5 * CHUNK)
                size = rng.choice((rng.randrange(1, 64), rng.randrange(1, 2 * CHUNK)))
                data = bytes([step % 251 + 1]) * size
                os.pwrite(fd, data, offset)
                live[len(live) : offset] = bytes(max(0, offset - len(live)))
                live[offset : offset + size] = data
            if rng.random() < 0.3:
                os.fsync(fd)
                assert on_disk.read_bytes() == live, f"the disk after the sync at step {step}"
        synced = bytes(live)
        os.pwrite(fd, b"lost", 0)
        os.ftruncate(fd, 7)
        assert path.read_bytes() == b"lost" + synced[4:7]
    finally:
        os.close(fd)
    lazyfs.crash()

    assert on_disk.read_bytes() == synced


def test_a_rename_is_durable_once_the_file_or_its_directory_is_synced(mount, tmp_path):
    """The atomic replace (write a temporary file, sync it, rename it over the old one), as
    nats-server writes its metadata: without a sync after the rename the old file is what
    survives; with one, the new."""
    lazyfs = mount()
    root = lazyfs.mountpoint
    for name in ("unsynced", "dir-synced", "file-synced"):
        (root / name).mkdir()
        write(root / name / "meta", b"old", sync=True)
        write(root / name / "meta.tmp", b"new", sync=True)
        os.rename(root / name / "meta.tmp", root / name / "meta")
    fsync_dir(root / "dir-synced")
    fd = os.open(root / "file-synced" / "meta", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    assert (root / "unsynced" / "meta").read_bytes() == b"new"
    lazyfs.crash()

    assert tree(tmp_path / "disk") == {
        "unsynced": None,
        "unsynced/meta": b"old",
        "unsynced/meta.tmp": b"new",
        "dir-synced": None,
        "dir-synced/meta": b"new",
        "file-synced": None,
        "file-synced/meta": b"new",
    }


def test_a_move_to_another_directory_is_durable_from_its_old_directory_too(mount, tmp_path):
    """A rename is one change: syncing the directory it left persists where it went."""
    lazyfs = mount()
    root = lazyfs.mountpoint
    for name in ("from", "to"):
        (root / name).mkdir()
    write(root / "from" / "file", b"synced", sync=True)
    fsync_dir(root)
    os.rename(root / "from" / "file", root / "to" / "file")
    fsync_dir(root / "from")
    lazyfs.crash()

    assert tree(tmp_path / "disk") == {"from": None, "to": None, "to/file": b"synced"}


def test_unlink_mkdir_and_new_names_are_durable_once_their_directory_is_synced(mount, tmp_path):
    lazyfs = mount()
    root = lazyfs.mountpoint
    for name in ("kept", "removed"):
        write(root / name, b"synced", sync=True)
    os.unlink(root / "kept")
    os.unlink(root / "removed")
    (root / "new-dir").mkdir()
    write(root / "new-file", b"data never synced")
    lazyfs.crash()
    assert tree(tmp_path / "disk") == {"kept": b"synced", "removed": b"synced"}

    lazyfs = mount()
    root = lazyfs.mountpoint
    os.unlink(root / "removed")
    (root / "new-dir").mkdir()
    write(root / "new-file", b"data never synced")
    fsync_dir(root)
    lazyfs.crash()

    # The directory's sync made its entries durable; a file's data needs its own sync.
    assert tree(tmp_path / "disk") == {"kept": b"synced", "new-dir": None, "new-file": b""}


def test_a_clean_unmount_writes_everything_back(mount, tmp_path):
    lazyfs = mount()
    (lazyfs.mountpoint / "dir").mkdir()
    write(lazyfs.mountpoint / "dir" / "file", b"never fsynced")
    lazyfs.unmount()

    assert tree(tmp_path / "disk") == {"dir": None, "dir/file": b"never fsynced"}


async def test_nats_server_runs_on_it_and_syncs_only_with_sync_always(tmp_path):
    """nats-server's store on LazyFS works, and what it syncs is what tests/e2e/test_power_loss.py
    builds on: with ``sync_interval: always`` its metadata and every block write; with the
    default interval nothing at all in its first seconds, so a power cut loses the whole store."""
    for sync_always in (True, False):
        store = tmp_path / f"nats-{sync_always}"
        lazyfs = LazyFs(store / "jetstream", tmp_path / f"disk-{sync_always}", log_syncs=True)
        try:
            lazyfs.mount()
        except FuseUnavailable as missing:
            pytest.fail(str(missing))
        broker = embedded_for_tests(port=free_port(), store_dir=store, sync_always=sync_always)
        try:
            broker.start()
            nc = await connect_as(broker.url, "admin")
            js = nc.jetstream()
            await ensure_stream(js, max_age_s=3600, max_bytes=1 << 30, duplicate_window_s=120)
            for index in range(100):
                await js.publish("logs.etl.ws.wf", json.dumps({"index": index}).encode())
            assert (await js.stream_info(STREAM_NAME)).state.messages == 100
            await nc.close()
        finally:
            broker.kill()
            lazyfs.close()

        synced = lazyfs.syncs()
        stream_dir = "jetstream/$G/streams/LOGS"
        if sync_always:
            assert f"fsync {stream_dir}/meta.inf.tmp" in synced
            assert f"fsyncdir {stream_dir}" in synced
            assert synced.count(f"fsync {stream_dir}/msgs/1.blk") >= 100
        else:
            assert synced == []
            assert tree(tmp_path / f"disk-{sync_always}") == {}
