"""Walk a commit's tree straight from a bundle repo's object files: ostree's gate.

Everything ``ostree pull-local`` will open in the bundle repo is checked here, through
:class:`~aklited.drivefs.BundleFiles`, so ostree never meets a FIFO, a device or a link out
of the bundle: the repo's directories and ``config`` (read as ostree reads it), the commit
(hashed against its name), its detached metadata, every dirtree and dirmeta of its tree
(hashed against their names, so a parse failure is the object's fault), and every file
object the sysroot repo lacks (a regular file; a symlink too in a ``bare`` repo, which
ostree reads with ``readlink``). The walk runs before ostree starts, or beside it where the
kernel itself keeps ostree from following links and opening devices on the drive (see
:meth:`aklited.rootfs.sysroot.OstreeSysroot.pull`); the config and the commit are always
checked first (:func:`check_repo_entry`).

The same walk feeds the space estimate. ``ostree ls -R -C`` would read the header of every
file object; walking the dirtree objects costs one read per directory, and only the objects
the sysroot repo lacks need a size: free for ``bare*`` repos (the file size), taken from the
commit's ``ostree.sizes`` metadata where the factory wrote it (``ostree commit
--generate-sizes``: no read, only the inode is checked), else one header read per object
for ``archive`` repos, done in parallel. All blocking; run it in a thread.

Objects are GVariant-serialised (little-endian framing offsets): a commit is
``(a{sv}aya(say)sstayay)``, a dirtree ``(a(say)a(sayay))``. An archive file object starts
with a 4-byte big-endian header length and 4 bytes of padding, then the header variant
``(tuuuusa(ayay))`` whose first field is the uncompressed size (big-endian).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import structlog

from aklited.drivefs import (
    BundleDirectory,
    BundleFiles,
    DriveEntryError,
    MissingEntryError,
    UnsafeEntryError,
    describe_mode,
)
from aklited.rootfs.repo import object_path, object_relpath
from aklited.rootfs.space import TreeListing

log = structlog.get_logger(__name__)

_HEADER_READ = 64
# Header reads side by side: two threads hide most of the drive's latency; more only contend
# for the interpreter, and the walk may run beside ostree's copy, sharing its CPU.
_READERS = 2
# Bounds on what one metadata object may be (ostree's own limit is 128 MiB, far above what a
# rootfs needs): a drive cannot make the walk read without end.
_METADATA_LIMITS = {
    "commit": 16 << 20,
    "commitmeta": 16 << 20,
    "dirtree": 32 << 20,
    "dirmeta": 1 << 20,
}
_CONFIG_LIMIT = 64 << 10
_OBJECT_TYPE_FILE = 1  # OSTREE_OBJECT_TYPE_FILE, the last byte of an ``ostree.sizes`` entry
# Directories ostree opens in a repo it reads from.
_REPO_DIRS = ("objects", "tmp", "tmp/cache", "state", "refs")
# Repo modes whose objects the walk knows (a bare-split-xattrs repo has more kinds).
_REPO_MODES = frozenset({"archive", "archive-z2", "bare", "bare-user", "bare-user-only"})
# Keys that make ostree open a repo or files named by the config, not in the bundle.
_OUTSIDE_KEYS = frozenset({"parent", "add-remotes-config-dir"})
# A key file as GLib reads it: blanks it strips, and what a plain config holds.
_BLANKS = " \t"
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\t\n]")
_BOOT_FILE = re.compile(r"^/usr/lib/modules/[^/]+/(vmlinuz|initramfs\.img|dtb/.*)$")


class MissingObjectError(Exception):
    """An object the commit references is not in the repo."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


class CorruptObjectError(ValueError):
    """An object does not hash to its name, or a verified object does not parse."""


def offset_size(total: int) -> int:
    if total <= 0xFF:
        return 1
    if total <= 0xFFFF:
        return 2
    return 4 if total <= 0xFFFFFFFF else 8


def _offset(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


def frame_ends(data: bytes, count: int) -> tuple[list[int], int]:
    """The end offsets of a tuple's first ``count`` variable members, and the table start."""
    size = offset_size(len(data))
    table = len(data) - count * size
    if table < 0:
        raise ValueError("truncated variant")
    ends = [_offset(data, len(data) - (i + 1) * size, size) for i in range(count)]
    if any(end > table for end in ends) or ends != sorted(ends):
        raise ValueError("bad framing offsets")
    return ends, table


def _array_items(data: bytes, *, align: int = 1) -> list[bytes]:
    """The elements of an array of variable-size elements (each starting ``align``-aligned)."""
    if not data:
        return []
    size = offset_size(len(data))
    table = _offset(data, len(data) - size, size)
    if table > len(data) or (len(data) - table) % size:
        raise ValueError("bad array framing")
    items, start = [], 0
    for at in range(table, len(data), size):
        end = _offset(data, at, size)
        if not start <= end <= table:
            raise ValueError("bad array element offset")
        items.append(data[start:end])
        start = -(-end // align) * align
    return items


def _name(data: bytes) -> str:
    if not data.endswith(b"\0"):
        raise ValueError("string not terminated")
    name = data[:-1].decode("utf-8")
    if "/" in name or name in {"", ".", ".."}:
        raise ValueError(f"bad file name {name!r}")
    return name


def _checksum(data: bytes) -> str:
    if len(data) != 32:
        raise ValueError("checksum is not 32 bytes")
    return data.hex()


def parse_commit_root(data: bytes) -> tuple[str, str]:
    """The root dirtree and dirmeta checksums of a serialised commit."""
    ends, table = frame_ends(data, 6)
    tree_end = ends[5]
    if tree_end < 32 or table - tree_end != 32:
        raise ValueError("bad commit root checksums")
    return _checksum(data[tree_end - 32 : tree_end]), _checksum(data[tree_end:table])


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned LEB128 integer at ``at``: its value and the offset after it."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _metadata_entries(commit: bytes) -> dict[str, tuple[bytes, bytes]]:
    """The commit's metadata ``a{sv}``: key -> (the value's bytes, its type string)."""
    ends, _ = frame_ends(commit, 6)
    entries: dict[str, tuple[bytes, bytes]] = {}
    for entry in _array_items(commit[: ends[0]], align=8):  # a {sv} entry is 8-aligned
        (key_end,), table = frame_ends(entry, 1)
        key = entry[:key_end]
        if not key.endswith(b"\0"):
            raise ValueError("metadata key not terminated")
        variant = entry[-(-key_end // 8) * 8 : table]  # a variant is 8-aligned
        cut = variant.rfind(b"\0")
        if cut < 0:
            raise ValueError("variant without a type")
        entries[key[:-1].decode("utf-8")] = (variant[:cut], variant[cut + 1 :])
    return entries


def parse_commit_sizes(commit: bytes) -> dict[str, int]:
    """The unpacked size of each file object, from the commit's ``ostree.sizes`` metadata
    (written by ``ostree commit --generate-sizes``); empty when the commit has none.

    Each entry is the object's 32-byte checksum, its archived and its unpacked size as
    varints and, on newer commits, its object type (1: a file; dirtree and dirmeta
    entries are skipped).
    """
    found = _metadata_entries(commit).get("ostree.sizes")
    if found is None:
        return {}
    value, kind = found
    if kind != b"aay":
        raise ValueError(f"ostree.sizes is of type {kind!r}, not aay")
    sizes: dict[str, int] = {}
    for item in _array_items(value):
        checksum = _checksum(item[:32])
        _, at = _varint(item, 32)
        unpacked, at = _varint(item, at)
        if at < len(item) and item[at] != _OBJECT_TYPE_FILE:
            continue
        sizes[checksum] = unpacked
    return sizes


def parse_dirtree(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Files ``(name, checksum)`` and dirs ``(name, tree, meta)`` of a serialised dirtree."""
    ends, table = frame_ends(data, 1)
    files = []
    for item in _array_items(data[: ends[0]]):
        (name_end,), item_table = frame_ends(item, 1)
        files.append((_name(item[:name_end]), _checksum(item[name_end:item_table])))
    dirs = []
    for item in _array_items(data[ends[0] : table]):
        (name_end, tree_end), item_table = frame_ends(item, 2)
        dirs.append(
            (
                _name(item[:name_end]),
                _checksum(item[name_end:tree_end]),
                _checksum(item[tree_end:item_table]),
            )
        )
    return files, dirs


def repo_mode(config: str, name: str = "config") -> str:
    """The mode of a bundle repo from its ``config``, parsed as GLib's key files are (as
    ostree reads it: lines split at ``\\n`` only, ``key=value``, case-sensitive keys, ASCII
    blanks stripped before a key or value and after a key, never after a value), so that
    the walk checks the very objects ostree will open.

    Raises:
        CorruptObjectError: not a plain ASCII key file; a ``[core]`` key given twice; a
            mode the walk does not know; a ``parent`` repo or a remotes directory, which
            ostree would open outside the bundle.
    """
    # Anything else (another line break, a Unicode blank) GLib and Python split or strip
    # differently: a config of plain printable ASCII has one reading.
    text = config.replace("\r\n", "\n")
    if bad := _NOT_PLAIN.search(text):
        raise CorruptObjectError(f"{name} holds {bad[0]!r}, not plain ASCII text")
    core: dict[str, str] = {}
    group = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.lstrip(_BLANKS)
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            header = line.rstrip(_BLANKS)
            if not header.endswith("]") or "]" in header[:-1]:
                raise CorruptObjectError(f"{name} line {number}: not a group header")
            group = header[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep or group is None:
            raise CorruptObjectError(f"{name} line {number}: not a key=value line in a group")
        if group != "core":
            continue
        key = key.rstrip(_BLANKS)
        if key in core:
            raise CorruptObjectError(f"{name} gives core.{key} twice")
        core[key] = value.lstrip(_BLANKS)
    if refused := sorted(_OUTSIDE_KEYS & core.keys()):
        raise CorruptObjectError(f"{name} sets core.{refused[0]}, which leads outside the bundle")
    mode = core.get("mode", "bare")
    if mode not in _REPO_MODES:
        raise CorruptObjectError(f"{name} has mode {mode!r}, not one a bundle repo may have")
    return mode


class _Found(NamedTuple):
    """An object as its fan-out directory holds it (``info``: its lstat)."""

    directory: BundleDirectory
    entry: str
    info: os.stat_result


class _SourceRepo:
    """The bundle repo, read only through the confined reader.

    Objects are looked up in their fan-out directory (``objects/ab``), resolved once: one
    ``fstatat`` per object and no lock, so the threads sizing them run side by side. An
    object that is a link, or whose directory cannot be used, goes the long way through
    :class:`BundleFiles`, which follows links inside the bundle (for file objects, as
    ostree does where the drive allows links) and names exactly what is wrong.
    """

    def __init__(self, files: BundleFiles) -> None:
        self.files = files
        self._fan_outs: dict[str, BundleDirectory | None] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _SourceRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            for directory in self._fan_outs.values():
                if directory is not None:
                    directory.close()
            self._fan_outs.clear()

    def _fan_out(self, checksum: str) -> BundleDirectory | None:
        prefix = checksum[:2]
        with self._lock:
            if prefix not in self._fan_outs:
                try:
                    self._fan_outs[prefix] = self.files.directory(f"objects/{prefix}")
                except DriveEntryError:
                    self._fan_outs[prefix] = None  # each object says what is wrong
            return self._fan_outs[prefix]

    def _lstat(self, checksum: str, objtype: str) -> _Found | None:
        """The object itself in its fan-out directory; None: go the long way."""
        directory = self._fan_out(checksum)
        if directory is None:
            return None
        entry = f"{checksum[2:]}.{objtype}"
        try:
            return _Found(directory, entry, directory.lstat(entry))
        except MissingEntryError as e:
            raise MissingObjectError(self.files.path(object_relpath(checksum, objtype))) from e

    def metadata(self, checksum: str, objtype: str) -> bytes:
        """A metadata object's bytes, checked against its checksum."""
        relative = object_relpath(checksum, objtype)
        limit = _METADATA_LIMITS[objtype]
        try:
            found = self._lstat(checksum, objtype)
            if found is not None:
                # ostree does not follow a link to a metadata object (it would report the
                # object missing, or skip a dirmeta): only files will do.
                data = found.directory.read(found.entry, limit=limit, info=found.info)
            else:
                data = self.files.read(relative, limit=limit, follow_last=False)
        except MissingEntryError as e:
            raise MissingObjectError(self.files.path(relative)) from e
        if hashlib.sha256(data).hexdigest() != checksum:
            raise CorruptObjectError(
                f"{self.files.name(relative)} does not match its checksum {checksum}"
            )
        return data

    def mode(self) -> str:
        """The repo's mode, read from ``config`` as ostree reads it."""
        name = self.files.name("config")
        try:
            text = self.files.read("config", limit=_CONFIG_LIMIT).decode("utf-8")
        except MissingEntryError as e:
            raise MissingObjectError(self.files.path("config")) from e
        except UnicodeDecodeError as e:
            raise CorruptObjectError(f"{name} is not an OSTree config: {e}") from e
        return repo_mode(text, name)

    def check_layout(self, commit: str) -> None:
        """The directories ostree opens, and the commit's side files, are what they claim."""
        for directory in _REPO_DIRS:
            self.files.is_dir(directory)
        if self.files.exists(f"state/{commit}.commitpartial"):
            raise MissingObjectError(self.files.path(f"state/{commit}.commitpartial"))
        if self.files.exists(object_relpath(commit, "commitmeta")):
            self.files.read(
                object_relpath(commit, "commitmeta"),
                limit=_METADATA_LIMITS["commitmeta"],
                follow_last=False,
            )

    def archive_size(self, checksum: str) -> int:
        relative = object_relpath(checksum, "filez")
        try:
            found = self._lstat(checksum, "filez")
            if found is not None and not stat.S_ISLNK(found.info.st_mode):
                head = found.directory.read_head(found.entry, _HEADER_READ, info=found.info)
            else:
                head = self.files.read_head(relative, _HEADER_READ)
        except MissingEntryError as e:
            raise MissingObjectError(self.files.path(relative)) from e
        if len(head) < 16:
            raise CorruptObjectError(f"{self.files.name(relative)} is a truncated file object")
        return int(struct.unpack_from(">Q", head, 8)[0])

    def check_regular(self, checksum: str) -> None:
        """The archive file object is a regular file in the bundle, through links inside it
        as ostree opens it (it is not read)."""
        relative = object_relpath(checksum, "filez")
        found = self._lstat(checksum, "filez")
        if found is not None and stat.S_ISREG(found.info.st_mode):
            return
        try:
            info = self.files.stat(relative)
        except MissingEntryError as e:
            raise MissingObjectError(self.files.path(relative)) from e
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeEntryError(
                self.files.name(relative), f"is {describe_mode(info.st_mode)}, not a file object"
            )

    def bare_size(self, checksum: str, *, links: bool) -> int:
        relative = object_relpath(checksum, "file")
        found = self._lstat(checksum, "file")
        try:
            info = found.info if found is not None else self.files.lstat(relative)
        except MissingEntryError as e:
            raise MissingObjectError(self.files.path(relative)) from e
        if stat.S_ISREG(info.st_mode):
            return info.st_size
        if links and stat.S_ISLNK(info.st_mode):
            return 0  # a symlink object of a bare repo: ostree reads it, never follows it
        raise UnsafeEntryError(
            self.files.name(relative), f"is {describe_mode(info.st_mode)}, not a file object"
        )


def walk_missing(
    source: Path,
    commit: str,
    destination: Path,
    *,
    boundary: Path | None = None,
    follow_links: bool = True,
) -> TreeListing:
    """Check everything ostree will read of ``commit`` in ``source`` and list what
    ``destination`` lacks.

    Args:
        source: the bundle repo holding the commit.
        commit: the commit checksum.
        destination: the sysroot repo (``bare``).
        boundary: the bundle root no path may leave (default: ``source``'s parent).
        follow_links: False refuses every link (a drive mounted ``nosymfollow``, on which
            ostree cannot follow one either).

    Returns:
        A listing of the missing file objects with their sizes, all metadata objects of the
        tree, the number of directories a checkout creates, and the size of missing boot
        files.

    Raises:
        MissingObjectError: the source lacks an object the commit needs.
        CorruptObjectError: an object does not match its checksum or does not parse.
        aklited.drivefs.DriveEntryError: an entry is unsafe (a link out of the bundle, a
            FIFO, a device...), or the drive could not be read.
    """
    with _bundle_repo(source, boundary, follow_links) as repo:
        return _walk(repo, commit, destination)[0]


def check_repo_entry(
    source: Path, commit: str, *, boundary: Path | None = None, follow_links: bool = True
) -> None:
    """Check what ``ostree pull-local`` opens of ``source`` before it walks the tree: the
    repo's directories and ``config``, the commit (hashed against its name) and its
    detached metadata. A few small reads.

    Raises what :func:`walk_missing` raises.
    """
    with _bundle_repo(source, boundary, follow_links) as repo:
        repo.check_layout(commit)
        repo.mode()
        repo.metadata(commit, "commit")


@contextmanager
def _bundle_repo(source: Path, boundary: Path | None, follow_links: bool) -> Iterator[_SourceRepo]:
    """``source`` read through the confined reader, from ``boundary`` (default: its
    parent), which no path may leave."""
    root = boundary if boundary is not None else source.parent
    base = source.relative_to(root).as_posix()
    with (
        BundleFiles(root, base=base, follow_links=follow_links) as files,
        _SourceRepo(files) as repo,
    ):
        yield repo


def check_commit(files: BundleFiles, commit: str) -> tuple[TreeListing, str]:
    """:func:`walk_missing` against an empty destination: every object of the commit is
    checked, and every file object listed. Also returns the repo mode.

    The sizes of ``archive`` file objects are not read (they are 0 in the listing): the
    caller opens each object anyway to hash it, and that open checks it as the walk would.
    """
    with _SourceRepo(files) as repo:
        return _walk(repo, commit, None, sized=False)


def _walk(
    repo: _SourceRepo, commit: str, destination: Path | None, *, sized: bool = True
) -> tuple[TreeListing, str]:
    repo.check_layout(commit)
    mode = repo.mode()
    commit_data = repo.metadata(commit, "commit")
    try:
        root_tree, root_meta = parse_commit_root(commit_data)
    except ValueError as e:
        raise CorruptObjectError(f"commit {commit} does not parse: {e}") from e
    try:
        # The commit is hashed against its name: sizes it carries are the factory's word.
        known_sizes = parse_commit_sizes(commit_data) if sized else {}
    except (ValueError, UnicodeDecodeError) as e:
        # Only a shortcut: ostree itself does not read this metadata; size by the headers.
        log.info("commit sizes unreadable: objects sized one by one", commit=commit, error=str(e))
        known_sizes = {}
    parsed: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str, str]]]] = {}
    metadata = {(root_tree, "dirtree"), (root_meta, "dirmeta")}
    wanted: dict[str, bool] = {}  # missing file checksum -> is a boot file
    directories = 0
    stack = [("", root_tree)]
    while stack:
        prefix, tree = stack.pop()
        directories += 1
        if tree not in parsed:
            data = repo.metadata(tree, "dirtree")
            try:
                parsed[tree] = parse_dirtree(data)
            except ValueError as e:
                raise CorruptObjectError(f"dirtree {tree} does not parse: {e}") from e
        entries, dirs = parsed[tree]
        for name, checksum in entries:
            # lexists: a symlink object in a bare repo is a symlink, possibly dangling.
            if checksum in wanted or (
                destination is not None
                and os.path.lexists(object_path(destination, checksum, "file"))
            ):
                continue
            wanted[checksum] = bool(_BOOT_FILE.match(f"{prefix}/{name}"))
        for name, sub_tree, sub_meta in dirs:
            metadata.update({(sub_tree, "dirtree"), (sub_meta, "dirmeta")})
            stack.append((f"{prefix}/{name}", sub_tree))
    for checksum, kind in metadata:
        if kind == "dirmeta":
            repo.metadata(checksum, kind)
    archive = mode.startswith("archive")

    def size(checksum: str) -> int:
        if not archive:
            return repo.bare_size(checksum, links=mode == "bare")
        if not sized:
            return 0
        if checksum in known_sizes:
            # The size from the commit; the object is still checked, by its inode alone.
            repo.check_regular(checksum)
            return known_sizes[checksum]
        return repo.archive_size(checksum)

    missing = _sized(wanted, size)
    boot = sum(size for checksum, size in missing.items() if wanted[checksum])
    listing = TreeListing(
        files=missing,
        metadata=frozenset(metadata),
        directories=directories,
        boot_bytes=boot,
    )
    return listing, mode


def _sized(checksums: Iterable[str], size: Callable[[str], int]) -> dict[str, int]:
    """``size`` of every object, read one task per fan-out directory (its objects' inodes
    and headers lie together) by a few threads."""
    groups: dict[str, list[str]] = {}
    for checksum in checksums:
        groups.setdefault(checksum[:2], []).append(checksum)

    def sizes(group: list[str]) -> list[tuple[str, int]]:
        return [(checksum, size(checksum)) for checksum in group]

    readers = ThreadPoolExecutor(max_workers=_READERS)
    try:
        return dict(item for group in readers.map(sizes, groups.values()) for item in group)
    finally:
        # After a refusal the groups not yet begun are not read (ostree may be copying).
        readers.shutdown(cancel_futures=True)
