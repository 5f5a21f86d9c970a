"""Walk a commit's tree straight from a repo's object files, for the space estimate.

``ostree ls -R -C`` reads the header of every file object of a commit; on a cold USB drive
that is one small random read per file. Walking the dirtree objects ourselves costs one
read per directory, and only the objects the sysroot repo lacks need a size: free for
``bare*`` repos (the file size) and one header read for ``archive`` repos, done in
parallel. All blocking; run it in a thread.

Objects are GVariant-serialised (little-endian framing offsets): a commit is
``(a{sv}aya(say)sstayay)``, a dirtree ``(a(say)a(sayay))``. An archive file object starts
with a 4-byte big-endian header length and 4 bytes of padding, then the header variant
``(tuuuusa(ayay))`` whose first field is the uncompressed size (big-endian).
"""

from __future__ import annotations

import configparser
import os
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aklited.ostree_repo import commit_path, object_path
from aklited.ostree_space import TreeListing

_HEADER_READ = 64
_READERS = 8
_BOOT_FILE = re.compile(r"^/usr/lib/modules/[^/]+/(vmlinuz|initramfs\.img|dtb/.*)$")


class MissingObjectError(Exception):
    """An object the commit references is not in the repo."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


def _offset_size(total: int) -> int:
    if total <= 0xFF:
        return 1
    if total <= 0xFFFF:
        return 2
    return 4 if total <= 0xFFFFFFFF else 8


def _offset(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


def _frame_ends(data: bytes, count: int) -> tuple[list[int], int]:
    """The end offsets of a tuple's first ``count`` variable members, and the table start."""
    size = _offset_size(len(data))
    table = len(data) - count * size
    if table < 0:
        raise ValueError("truncated variant")
    ends = [_offset(data, len(data) - (i + 1) * size, size) for i in range(count)]
    if any(end > table for end in ends) or ends != sorted(ends):
        raise ValueError("bad framing offsets")
    return ends, table


def _array_items(data: bytes) -> list[bytes]:
    """The elements of an array of variable-size elements."""
    if not data:
        return []
    size = _offset_size(len(data))
    table = _offset(data, len(data) - size, size)
    if table > len(data) or (len(data) - table) % size:
        raise ValueError("bad array framing")
    items, start = [], 0
    for at in range(table, len(data), size):
        end = _offset(data, at, size)
        if not start <= end <= table:
            raise ValueError("bad array element offset")
        items.append(data[start:end])
        start = end
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
    ends, table = _frame_ends(data, 6)
    tree_end = ends[5]
    if tree_end < 32 or table - tree_end != 32:
        raise ValueError("bad commit root checksums")
    return _checksum(data[tree_end - 32 : tree_end]), _checksum(data[tree_end:table])


def parse_dirtree(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Files ``(name, checksum)`` and dirs ``(name, tree, meta)`` of a serialised dirtree."""
    ends, table = _frame_ends(data, 1)
    files = []
    for item in _array_items(data[: ends[0]]):
        (name_end,), item_table = _frame_ends(item, 1)
        files.append((_name(item[:name_end]), _checksum(item[name_end:item_table])))
    dirs = []
    for item in _array_items(data[ends[0] : table]):
        (name_end, tree_end), item_table = _frame_ends(item, 2)
        dirs.append(
            (
                _name(item[:name_end]),
                _checksum(item[name_end:tree_end]),
                _checksum(item[tree_end:item_table]),
            )
        )
    return files, dirs


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise MissingObjectError(path) from e


def _repo_mode(repo: Path) -> str:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(repo / "config", encoding="utf-8")
    return parser.get("core", "mode", fallback="bare")


def _archive_size(path: Path) -> int:
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER_READ)
    except FileNotFoundError as e:
        raise MissingObjectError(path) from e
    if len(head) < 16:
        raise ValueError(f"truncated archive object {path}")
    return int(struct.unpack_from(">Q", head, 8)[0])


def _bare_size(path: Path) -> int:
    try:
        st = path.lstat()
    except FileNotFoundError as e:
        raise MissingObjectError(path) from e
    return 0 if path.is_symlink() else st.st_size


def walk_missing(source: Path, commit: str, destination: Path) -> TreeListing:
    """What ``commit`` in ``source`` references that ``destination`` lacks.

    Args:
        source: the bundle repo holding the commit.
        commit: the commit checksum.
        destination: the sysroot repo (``bare``).

    Returns:
        A listing of the missing file objects with their sizes, all metadata objects of the
        tree, the number of directories a checkout creates, and the size of missing boot
        files.

    Raises:
        MissingObjectError: the source lacks an object the commit needs.
        ValueError: an object does not parse; the caller may fall back to ``ostree ls``.
    """
    root_tree, root_meta = parse_commit_root(_read(commit_path(source, commit)))
    parsed: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str, str]]]] = {}
    metadata = {(root_tree, "dirtree"), (root_meta, "dirmeta")}
    wanted: dict[str, bool] = {}  # missing file checksum -> is a boot file
    directories = 0
    stack = [("", root_tree)]
    while stack:
        prefix, tree = stack.pop()
        directories += 1
        if tree not in parsed:
            parsed[tree] = parse_dirtree(_read(object_path(source, tree, "dirtree")))
        entries, dirs = parsed[tree]
        for name, checksum in entries:
            # lexists: a symlink object in a bare repo is a symlink, possibly dangling.
            if checksum in wanted or os.path.lexists(object_path(destination, checksum, "file")):
                continue
            wanted[checksum] = bool(_BOOT_FILE.match(f"{prefix}/{name}"))
        for name, sub_tree, sub_meta in dirs:
            metadata.update({(sub_tree, "dirtree"), (sub_meta, "dirmeta")})
            stack.append((f"{prefix}/{name}", sub_tree))
    archive = _repo_mode(source).startswith("archive")
    paths = [object_path(source, c, "filez" if archive else "file") for c in wanted]
    with ThreadPoolExecutor(max_workers=_READERS) as readers:
        sizes = list(readers.map(_archive_size if archive else _bare_size, paths))
    missing = dict(zip(wanted, sizes, strict=True))
    boot = sum(size for checksum, size in missing.items() if wanted[checksum])
    return TreeListing(
        files=missing,
        metadata=frozenset(metadata),
        directories=directories,
        boot_bytes=boot,
    )
