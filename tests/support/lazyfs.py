"""LazyFS for tests: a FUSE filesystem that loses whatever was never fsynced, as a power cut does.

In the manner of Jepsen's LazyFS: every change to the mounted tree lives in this process's
memory, the way the kernel's page cache holds it, until a sync makes it durable in a backing
directory. Killing this process with SIGKILL and unmounting lazily is the power failure: the
backing directory then holds exactly what was synced, and a new mount of it is the machine
after the reboot. It runs as its own process (``python -m tests.support.lazyfs MOUNTPOINT
BACKING``); ``LazyFs`` below mounts, crashes and unmounts it from a test.

What is durable when (the model, checked by tests/integration/test_lazyfs.py):

- Reads see every write at once (page-cache semantics); nothing reaches the backing directory
  before a sync.
- ``fsync``/``fdatasync`` of a file (or any write through a descriptor opened with ``O_SYNC`` or
  ``O_DSYNC``) makes its data durable, and its directory entry: its name, and the names of the
  directories above it. ext4 and XFS do that in practice for a new file (the journal commit
  carries the entry), and programs rely on it.
- ``fsync`` of a directory makes its entries durable: each name it holds now (a file whose data
  was never synced appears empty, as after a crash with delayed allocation), and the removal of
  each name it no longer holds (unlink, rmdir, rename away).
- A rename is atomic: made durable at either end (a sync of the file, of its new directory or of
  its old one), it moves the durable copy with its synced data. (One tangle is not modelled:
  a sync that removes the durable copy of a removed directory removes with it the durable
  copies of files moved out of it to places not yet synced.)
- The mode is made durable with the entry and the data; owners and times are not modelled.
- A clean unmount (``fusermount3 -u``, or SIGTERM to this process) syncs everything first, as
  the kernel writes the page cache back before an unmount completes.

Not supported: hard links, symlinks, special files, extended attributes. ``flock`` and POSIX
locks are left to the kernel (nats-server locks its store with ``flock``).

The backing directory is written with ordinary writes and not fsynced itself: the machine
never loses power, only this process dies, and the host's page cache outlives it.
"""

from __future__ import annotations

import argparse
import ctypes.util
import errno
import importlib.util
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.waiting import WaitTimeout, wait_until_blocking

__all__ = ["FuseUnavailable", "LazyFs", "LazyOperations", "require_fuse"]

# Dirty data is tracked in chunks of this many bytes: a sync rewrites whole dirty chunks.
CHUNK = 64 * 1024
# Mounting takes about 0.2 s (a Python start and the FUSE handshake); bounds a loaded machine.
MOUNT_TIMEOUT_S = 20.0
# A clean unmount syncs everything, then the process exits.
UNMOUNT_TIMEOUT_S = 20.0
# The repository root: ``python -m tests.support.lazyfs`` must run from there.
_REPO = Path(__file__).resolve().parents[2]
# Each sync is logged with this prefix when the process runs with --log-syncs.
SYNC_LOG_PREFIX = "lazyfs sync: "


def _now() -> int:
    return time.time_ns()


def _join(parent: str, name: str) -> str:
    """A path in the backing directory, relative to it ("" is the backing directory itself)."""
    return f"{parent}/{name}" if parent else name


@dataclass(eq=False)
class Node:
    """A file or directory as the mount shows it (the volatile state), and where its durable copy
    is in the backing directory.

    Nodes compare by identity: a name can be taken over by another node (rename, unlink and
    create) and the durable bookkeeping must tell them apart.
    """

    ino: int
    is_dir: bool
    mode: int  # permission bits
    parent: Node | None = None  # None: the root, or unlinked (an open file may live on)
    name: str = ""
    children: dict[str, Node] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    atime_ns: int = field(default_factory=_now)
    mtime_ns: int = field(default_factory=_now)
    ctime_ns: int = field(default_factory=_now)
    # Durability: where the backing directory holds this node (None: nowhere).
    durable: str | None = None
    # A file's durable copy: its length, the shortest the file has been since it was last
    # synced, the chunks written since, and whether the copy must be rewritten whole.
    synced_len: int = 0
    floor: int = 0
    chunks: set[int] = field(default_factory=set)
    rewrite: bool = False


class LazyOperations:
    """The FUSE operations (mfusepy's ``Operations`` protocol, by name): the whole tree in memory,
    the backing directory written only by syncs."""

    use_ns = True  # times as integer nanoseconds (mfusepy)

    def __init__(self, backing: Path, *, log_syncs: bool = False) -> None:
        self.backing = Path(backing)
        self.log_syncs = log_syncs
        self._inos = iter(range(1, 1 << 62))
        self._fhs = iter(range(1, 1 << 62))
        self.handles: dict[int, tuple[Node, int]] = {}  # fh -> (node, open flags)
        self.durable_at: dict[str, Node] = {}  # backing path -> the node it holds
        self.root = self._new(is_dir=True, mode=0o755)
        self._mark(self.root, "")
        self._load(self.root)

    # -- the tree --------------------------------------------------------------------------------

    def _new(self, *, is_dir: bool, mode: int) -> Node:
        return Node(ino=next(self._inos), is_dir=is_dir, mode=mode & 0o7777)

    def _load(self, directory: Node) -> None:
        """Take the backing directory as it is: after a power failure, the synced state."""
        assert directory.durable is not None
        with os.scandir(self._backing(directory.durable)) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                    continue  # nothing here makes any other kind
                node = self._new(is_dir=stat.S_ISDIR(info.st_mode), mode=info.st_mode)
                node.mtime_ns = node.ctime_ns = info.st_mtime_ns
                self._attach(node, directory, entry.name)
                self._mark(node, _join(directory.durable, entry.name))
                if node.is_dir:
                    self._load(node)
                else:
                    node.data = bytearray(Path(entry.path).read_bytes())
                    node.synced_len = node.floor = len(node.data)

    def _attach(self, node: Node, parent: Node, name: str) -> None:
        parent.children[name] = node
        node.parent, node.name = parent, name
        parent.mtime_ns = parent.ctime_ns = _now()

    def _detach(self, node: Node) -> None:
        parent = node.parent
        assert parent is not None and parent.children.get(node.name) is node
        del parent.children[node.name]
        node.parent = None
        parent.mtime_ns = parent.ctime_ns = node.ctime_ns = _now()

    def _linked(self, node: Node) -> bool:
        """Whether the node has a name (a removed directory is empty, so a node with a parent
        has every ancestor up to the root)."""
        return node is self.root or node.parent is not None

    def _live_path(self, node: Node) -> str:
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    def _resolve(self, path: str | None) -> Node:
        if path is None:
            raise OSError(errno.ENOENT, "no path")
        node = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise OSError(errno.ENOTDIR, path)
            child = node.children.get(part)
            if child is None:
                raise OSError(errno.ENOENT, path)
            node = child
        return node

    def _parent_of(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._resolve(head or "/")
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, path)
        if not name:
            raise OSError(errno.EEXIST, path)
        return parent, name

    def _node(self, path: str | None, fh: int | None) -> Node:
        """The node an operation is about: its open handle's when there is one (the file may be
        unlinked, or renamed since), else the one at ``path``."""
        if fh and fh in self.handles:
            return self.handles[fh][0]
        return self._resolve(path)

    # -- durability -------------------------------------------------------------------------------

    def _backing(self, rel: str) -> str:
        return os.path.join(self.backing, rel) if rel else str(self.backing)

    def _mark(self, node: Node, rel: str) -> None:
        self.durable_at[rel] = node
        node.durable = rel

    def _under(self, rel: str) -> list[str]:
        prefix = rel + "/"
        return [key for key in self.durable_at if key == rel or key.startswith(prefix)]

    def _moved(self, old: str, new: str) -> None:
        for key in self._under(old):
            self._mark(self.durable_at.pop(key), new + key[len(old) :])

    def _drop(self, node: Node) -> None:
        """Remove a node's durable copy (with everything under it, for a directory)."""
        rel = node.durable
        assert rel is not None and rel != ""
        if node.is_dir:
            shutil.rmtree(self._backing(rel))
        else:
            os.unlink(self._backing(rel))
        for key in self._under(rel):
            gone = self.durable_at.pop(key)
            gone.durable = None
            gone.rewrite = not gone.is_dir

    def _evict(self, rel: str, guard: tuple[Node, ...]) -> None:
        """Free ``rel`` in the backing directory for another node. Its durable occupant moves to
        where it lives now if it still has a name (a rename is made durable as a whole), else it
        is removed. ``guard``: the nodes being persisted up the call chain, which must not be
        moved again (a cycle of renames: the occupant's copy is then dropped)."""
        occupant = self.durable_at.get(rel)
        if occupant is None:
            return
        if self._linked(occupant) and occupant not in guard:
            self._persist_entry(occupant, guard)
            if self.durable_at.get(rel) is not occupant:
                return
        self._drop(occupant)

    def _persist_entry(self, node: Node, guard: tuple[Node, ...] = ()) -> None:
        """Make the node's name durable where it lives now, with its ancestors'."""
        if node is self.root:
            return
        guard = (*guard, node)
        parent = node.parent
        assert parent is not None, "only a linked node has an entry"
        self._persist_entry(parent, guard)
        assert parent.durable is not None
        target = _join(parent.durable, node.name)
        if node.durable == target:
            return
        self._evict(target, guard)
        if node.durable is not None:
            os.rename(self._backing(node.durable), self._backing(target))
            self._moved(node.durable, target)
        elif node.is_dir:
            os.mkdir(self._backing(target))
            os.chmod(self._backing(target), node.mode)
            self._mark(node, target)
        else:
            os.close(os.open(self._backing(target), os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
            os.chmod(self._backing(target), node.mode)
            self._mark(node, target)
            node.rewrite = True  # its data: at its own sync; empty until then

    def _write_data(self, node: Node) -> None:
        """Bring the durable copy of a file's data up to what the mount shows."""
        assert node.durable is not None
        size = len(node.data)
        if not (node.rewrite or node.chunks) and node.floor == node.synced_len == size:
            return  # nothing changed since the last sync
        fd = os.open(self._backing(node.durable), os.O_WRONLY)
        try:
            with memoryview(node.data) as view:
                if node.rewrite:
                    os.ftruncate(fd, 0)
                    _pwrite_all(fd, view, 0)
                else:
                    if node.floor < node.synced_len:
                        os.ftruncate(fd, node.floor)
                    for chunk in sorted(node.chunks):
                        start = chunk * CHUNK
                        if start < size:
                            _pwrite_all(fd, view[start : start + CHUNK], start)
                    os.ftruncate(fd, size)
        finally:
            os.close(fd)
        os.chmod(self._backing(node.durable), node.mode)
        node.synced_len = node.floor = size
        node.chunks.clear()
        node.rewrite = False

    def sync_file(self, node: Node, why: str) -> None:
        if self.log_syncs:
            print(f"{SYNC_LOG_PREFIX}{why} {self._live_path(node) or '/'}", file=sys.stderr)
        if self._linked(node):
            self._persist_entry(node)
        if node.durable is not None and not node.is_dir:
            self._write_data(node)

    def sync_dir(self, node: Node) -> None:
        if self.log_syncs:
            print(f"{SYNC_LOG_PREFIX}fsyncdir {self._live_path(node) or '/'}", file=sys.stderr)
        if not self._linked(node):
            return  # removed: its entries went with it
        self._persist_entry(node)
        for child in list(node.children.values()):
            self._persist_entry(child)
        base = node.durable
        assert base is not None
        for rel, occupant in list(self.durable_at.items()):
            if (
                rel == ""
                or rel.rpartition("/")[0] != base
                or self.durable_at.get(rel) is not occupant
            ):
                continue
            if node.children.get(rel.rpartition("/")[2]) is not occupant:
                self._evict(rel, ())

    def sync_all(self) -> None:
        """Everything, as before an unmount."""

        def walk(directory: Node) -> Iterator[Node]:
            yield directory
            for child in list(directory.children.values()):
                if child.is_dir:
                    yield from walk(child)
                else:
                    yield child

        for node in list(walk(self.root)):
            if node.is_dir:
                self.sync_dir(node)
            else:
                self.sync_file(node, "unmount")

    # -- file contents ---------------------------------------------------------------------------

    def _resize(self, node: Node, length: int) -> None:
        if node.is_dir:
            raise OSError(errno.EISDIR, node.name)
        if length < len(node.data):
            del node.data[length:]
            node.floor = min(node.floor, length)
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.mtime_ns = node.ctime_ns = _now()

    # -- FUSE operations (called by mfusepy with the path as a str, None for an unlinked file) ----

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        if node.is_dir:
            kind, nlink = stat.S_IFDIR, 2 + sum(child.is_dir for child in node.children.values())
        else:
            kind, nlink = stat.S_IFREG, 1 if self._linked(node) else 0
        size = len(node.data)
        return {
            "st_mode": kind | node.mode,
            "st_ino": node.ino,
            "st_nlink": nlink,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": 4096,
            "st_atime": node.atime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.ctime_ns,
        }

    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        node = self._resolve(path)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, path)
        # With use_ino the kernel gets each entry's inode number from here, and a directory
        # listing leaves out entries numbered 0: every entry carries its node's.
        entries = [(".", node), ("..", node.parent or node), *node.children.items()]
        return [
            (
                name,
                {"st_ino": entry.ino, "st_mode": stat.S_IFDIR if entry.is_dir else stat.S_IFREG},
                0,
            )
            for name, entry in entries
        ]

    def mkdir(self, path: str, mode: int) -> int:
        parent, name = self._parent_of(path)
        if name in parent.children:
            raise OSError(errno.EEXIST, path)
        self._attach(self._new(is_dir=True, mode=mode), parent, name)
        return 0

    def rmdir(self, path: str) -> int:
        node = self._resolve(path)
        if node is self.root:
            raise OSError(errno.EBUSY, path)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, path)
        if node.children:
            raise OSError(errno.ENOTEMPTY, path)
        self._detach(node)
        return 0

    def unlink(self, path: str) -> int:
        node = self._resolve(path)
        if node.is_dir:
            raise OSError(errno.EISDIR, path)
        self._detach(node)
        return 0

    def rename(self, old: str, new: str) -> int:
        node = self._resolve(old)
        parent, name = self._parent_of(new)
        if node is self.root:
            raise OSError(errno.EBUSY, old)
        ancestor: Node | None = parent
        while ancestor is not None:  # a directory cannot move into itself
            if ancestor is node:
                raise OSError(errno.EINVAL, new)
            ancestor = ancestor.parent
        existing = parent.children.get(name)
        if existing is node:
            return 0
        if existing is not None:
            if existing.is_dir and not node.is_dir:
                raise OSError(errno.EISDIR, new)
            if node.is_dir and not existing.is_dir:
                raise OSError(errno.ENOTDIR, new)
            if existing.children:
                raise OSError(errno.ENOTEMPTY, new)
            self._detach(existing)
        self._detach(node)
        self._attach(node, parent, name)
        return 0

    def create(self, path: str, mode: int, flags: int) -> int:
        parent, name = self._parent_of(path)
        node = parent.children.get(name)
        if node is None:
            node = self._new(is_dir=False, mode=mode)
            self._attach(node, parent, name)
        elif flags & os.O_EXCL:
            raise OSError(errno.EEXIST, path)
        return self._open(node, flags)

    def open(self, path: str, flags: int) -> int:
        return self._open(self._resolve(path), flags)

    def _open(self, node: Node, flags: int) -> int:
        if node.is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(errno.EISDIR, node.name)
        if flags & os.O_TRUNC and node.data:
            self._resize(node, 0)
        fh = next(self._fhs)
        self.handles[fh] = (node, flags)
        return fh

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        node = self._node(path, fh)
        node.atime_ns = _now()
        return bytes(node.data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        node, flags = self.handles[fh]
        if flags & os.O_APPEND:
            offset = len(node.data)
        end = offset + len(data)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:end] = data
        if data:
            node.chunks.update(range(offset // CHUNK, (end - 1) // CHUNK + 1))
        node.mtime_ns = node.ctime_ns = _now()
        if flags & os.O_DSYNC:  # O_SYNC includes it
            self.sync_file(node, "O_SYNC write")
        return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self._resize(self._node(path, fh), length)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.sync_file(self._node(path, fh), "fdatasync" if datasync else "fsync")
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self.sync_dir(self._resolve(path))
        return 0

    def release(self, path: str | None, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    def chmod(self, path: str | None, mode: int) -> int:
        node = self._resolve(path)
        node.mode, node.ctime_ns = mode & 0o7777, _now()
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0  # owners are not modelled (everything here runs as one user)

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        node = self._resolve(path)
        node.atime_ns, node.mtime_ns = times or (_now(), _now())
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        info = os.statvfs(self.backing)
        keys = ("bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "favail")
        return {f"f_{key}": getattr(info, f"f_{key}") for key in keys} | {
            "f_namemax": info.f_namemax
        }

    def destroy(self, path: str) -> None:
        """Called once the mount is gone after a clean unmount: write everything back."""
        self.sync_all()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


# -- running it --------------------------------------------------------------------------------


class FuseUnavailable(RuntimeError):
    """This machine cannot mount the test filesystem; the message says what to install."""


def require_fuse() -> None:
    """Fail with what is missing: the suite runs these tests in CI, a silent skip would hide it."""
    missing = []
    if importlib.util.find_spec("mfusepy") is None:
        missing.append("the Python package mfusepy (pip install '.[test]')")
    if ctypes.util.find_library("fuse3") is None and ctypes.util.find_library("fuse") is None:
        missing.append("libfuse (Debian: apt-get install fuse3)")
    if shutil.which("fusermount3") is None:
        missing.append("fusermount3 (Debian: apt-get install fuse3)")
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse (a container needs --device /dev/fuse)")
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        missing.append("access to /dev/fuse (run as root, or in group fuse)")
    if missing:
        raise FuseUnavailable("LazyFS cannot mount here; missing: " + "; ".join(missing))


def _mountinfo_paths() -> set[str]:
    paths = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        # Mount points escape space, tab, newline and backslash as octal.
        paths.add(fields[4].encode().decode("unicode_escape"))
    return paths


class LazyFs:
    """One LazyFS process: ``mount()``, then ``crash()`` (the power cut) or ``unmount()`` (a
    clean shutdown, which syncs everything). ``close()`` is the teardown backstop."""

    def __init__(self, mountpoint: Path, backing: Path, *, log_syncs: bool = False) -> None:
        self.mountpoint = Path(mountpoint).resolve()
        self.backing = Path(backing).resolve()
        self.log_syncs = log_syncs
        self.log_path = self.backing.with_name(
            f"{self.backing.name}-lazyfs-{time.monotonic_ns()}.log"
        )
        self.process: subprocess.Popen | None = None
        self._mine = False  # whether the mount at mountpoint is this one's (not a later one's)

    @property
    def mounted(self) -> bool:
        """Whether anything is mounted at the mountpoint (read from /proc, without touching the
        mount, which may be dead)."""
        return str(self.mountpoint) in _mountinfo_paths()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def syncs(self) -> list[str]:
        """The syncs the process saw (with ``log_syncs``), e.g. ``fsync /a/b``."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [
            line.removeprefix(SYNC_LOG_PREFIX)
            for line in text.splitlines()
            if line.startswith(SYNC_LOG_PREFIX)
        ]

    def mount(self, timeout: float = MOUNT_TIMEOUT_S) -> LazyFs:
        require_fuse()
        if self.mounted:
            raise RuntimeError(f"something is already mounted at {self.mountpoint}")
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tests.support.lazyfs"]
        command += [str(self.mountpoint), str(self.backing)]
        command += ["--log-syncs"] if self.log_syncs else []
        with open(self.log_path, "ab") as output:
            self.process = process = subprocess.Popen(
                command, cwd=_REPO, stdout=output, stderr=output
            )

        def up() -> bool:
            if process.poll() is not None:
                raise FuseUnavailable(
                    f"LazyFS exited with {process.returncode} before it was mounted at "
                    f"{self.mountpoint}:\n{self.log()}"
                )
            self._mine = self.mounted
            return self._mine

        try:
            wait_until_blocking(up, f"LazyFS mounted at {self.mountpoint}", timeout=timeout)
        except WaitTimeout as late:
            self.crash()
            raise RuntimeError(f"{late}\n{self.log()}") from late
        return self

    def crash(self) -> None:
        """The power cut: SIGKILL (whatever was not synced dies with the process's memory), then
        a lazy unmount of the dead mount."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        if self._mine and self.mounted:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=True)
        self._mine = False

    def unmount(self, timeout: float = UNMOUNT_TIMEOUT_S) -> None:
        """A clean unmount: everything is synced to the backing directory, then the process
        exits. Nothing may still use the mount."""
        assert self.process is not None and self._mine, "mount() first"
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=True)
        self._mine = False
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.crash()
            raise RuntimeError(f"LazyFS did not exit within {timeout}s:\n{self.log()}") from None
        if code != 0:
            raise RuntimeError(f"LazyFS exited with {code} at unmount:\n{self.log()}")

    def close(self) -> None:
        """Teardown: crash whatever is still mounted or running (a test that failed midway)."""
        self.crash()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.lazyfs",
        description="Mount BACKING at MOUNTPOINT, keeping every change in memory until synced.",
    )
    parser.add_argument("mountpoint")
    parser.add_argument("backing")
    parser.add_argument("--log-syncs", action="store_true", help="log every sync on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    import mfusepy  # here, not at the top: a machine without libfuse can still import LazyFs

    operations = LazyOperations(Path(args.backing), log_syncs=args.log_syncs)
    # One thread (-s): operations run one at a time, so the tree needs no lock. hard_remove:
    # an unlinked open file is gone from the tree at once (no .fuse_hidden files), and its
    # handle keeps the node.
    mfusepy.FUSE(
        operations,
        args.mountpoint,
        foreground=True,
        nothreads=True,
        fsname="lazyfs",
        use_ino=True,
        hard_remove=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
