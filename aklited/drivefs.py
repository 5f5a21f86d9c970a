"""Files of a bundle on a drive, opened without ever leaving the bundle.

Whoever wrote the drive chose every entry on it: a FIFO where an object should be (an open
or a read that never returns), a device node or a link to the host's ``/dev/zero`` (a read
that never ends), links to the host's files and devices. So every path is resolved here
one component at a time from a descriptor of the bundle root: a link is read, never
followed by the kernel, and its target is resolved the same way, so it may lead anywhere
inside the bundle and nowhere outside it (an absolute target, or ``..`` above the root,
is refused). A file is opened only after ``lstat`` says it is a regular file, with
``O_NOFOLLOW | O_NONBLOCK``, and ``fstat`` must then agree; reads are bounded by the
caller. All of it blocks: run it in a worker thread.

Refusals are :class:`DriveEntryError` subclasses naming the path as the bundle spells it;
each caller maps them to its own outcome (TUF metadata 11, content 70, I/O 50 or 4).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# The kernel's own limit on links followed in one lookup (MAXSYMLINKS).
MAX_LINK_HOPS = 40
# No directory the device lists on a drive holds more (apps, app versions, TUF roots): a
# drive cannot make a listing exhaust memory.
MAX_DIR_ENTRIES = 4096
# Directory descriptors kept open; a bundle has a few hundred directories at most
# (256 object fan-out directories of an OSTree repo, a handful in the app store).
_DIR_CACHE_LIMIT = 512
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class DriveEntryError(Exception):
    """An entry of the bundle cannot be used. ``path`` is as the bundle spells it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class MissingEntryError(DriveEntryError):
    """The entry does not exist (a link inside the bundle that dangles counts as absent)."""


class UnsafeEntryError(DriveEntryError):
    """The entry is not what the bundle may hold there: a link out of the bundle, a link
    loop, a FIFO, a device, a socket, a directory for a file or a file for a directory,
    or a file over its size limit."""


class DriveIOError(DriveEntryError):
    """Reading the drive failed (pulled out, bad sectors): not the bundle's fault."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(path, f"cannot be read: {error.strerror or type(error).__name__}")
        self.error = error


def describe_mode(mode: int) -> str:
    """What a non-regular entry is, for a message."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


class BundleFiles:
    """Read access to the files under one bundle root, confined to it.

    Args:
        root: the bundle root; it is opened as given (the caller chose it), everything
            below it is hostile.
        base: where relative paths start, inside ``root`` (e.g. ``apps`` for the app
            store); links may still lead anywhere inside ``root``.
        label: how the root is named in messages (default: nothing, paths read
            ``ostree_repo/config``).
        follow_links: False refuses every link met on the way (for a drive mounted
            ``nosymfollow``, on which no other reader could follow one either).

    Safe to share between threads. Close it (or use it as a context manager) to release
    the directory descriptors it caches.
    """

    def __init__(
        self, root: Path, *, base: str = "", label: str = "", follow_links: bool = True
    ) -> None:
        self.root = root
        self._base = _parts(base)
        self._label = label
        self._follow_links = follow_links
        self._lock = threading.Lock()
        self._root_fd: int | None = None
        self._dirs: dict[tuple[str, ...], int] = {}

    @classmethod
    def for_subdir(cls, path: Path) -> BundleFiles:
        """Files under ``path``, confined to its parent (the bundle holding ``apps/``)."""
        return cls(path.parent, base=path.name)

    def __enter__(self) -> BundleFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every cached directory descriptor."""
        with self._lock:
            self._drop_dirs()
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None

    def path(self, relative: str) -> Path:
        """Where ``relative`` (from ``base``) lies on the host, for tools given a path."""
        return self.root.joinpath(*self._base, *_parts(relative))

    def name(self, relative: str) -> str:
        """``relative`` as messages spell it: from the bundle root."""
        joined = "/".join((*self._base, *_parts(relative)))
        return f"{self._label}/{joined}" if self._label else joined

    # -- queries ------------------------------------------------------------------------------

    def open(self, relative: str, *, follow_last: bool = True) -> BinaryIO:
        """Open a regular file for reading.

        With ``follow_last`` False, the file itself may not be a link (its directories
        still may, inside the bundle): for readers that do not follow one either.

        Raises:
            MissingEntryError: it does not exist.
            UnsafeEntryError: it leaves the bundle or is not a regular file.
            DriveIOError: the drive failed.
        """
        name = self.name(relative)
        with self._lock:
            parent, last, info = self._resolve(relative, name, follow_last=follow_last)
            fd = _open_checked(parent, last, info, name)
        return _opened(fd, info, name)

    def read(self, relative: str, *, limit: int, follow_last: bool = True) -> bytes:
        """Read a whole regular file of at most ``limit`` bytes (``follow_last`` as
        :meth:`open`).

        Raises:
            MissingEntryError, UnsafeEntryError (also when over ``limit``), DriveIOError.
        """
        with self.open(relative, follow_last=follow_last) as f:
            return _read_bounded(f, self.name(relative), limit)

    def read_head(self, relative: str, count: int) -> bytes:
        """The first ``count`` bytes (or fewer) of a regular file."""
        with self.open(relative) as f:
            return _read_head(f, self.name(relative), count)

    def lstat(self, relative: str) -> os.stat_result:
        """The entry itself, a link not followed (its directories are resolved safely)."""
        name = self.name(relative)
        with self._lock:
            return self._resolve(relative, name, follow_last=False)[2]

    def stat(self, relative: str) -> os.stat_result:
        """The entry, links resolved inside the bundle."""
        name = self.name(relative)
        with self._lock:
            return self._resolve(relative, name, follow_last=True)[2]

    def exists(self, relative: str) -> bool:
        """True when the entry exists (links resolved inside the bundle).

        Raises:
            UnsafeEntryError, DriveIOError: as :meth:`stat`; only absence is False.
        """
        try:
            self.stat(relative)
        except MissingEntryError:
            return False
        return True

    def is_dir(self, relative: str) -> bool:
        """True for a directory; False when absent. Anything else there is refused."""
        try:
            info = self.stat(relative)
        except MissingEntryError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeEntryError(
                self.name(relative), f"is {describe_mode(info.st_mode)}, not a directory"
            )
        return True

    def directory(self, relative: str) -> BundleDirectory:
        """A directory resolved once (links inside the bundle followed), whose entries are
        then looked up by name alone: for the many objects of one OSTree fan-out
        directory. Close it (or use it as a context manager).

        Raises:
            MissingEntryError, UnsafeEntryError, DriveIOError: as :meth:`is_dir`; absence
                too.
        """
        name = self.name(relative)
        with self._lock:
            canonical = self._resolve_dir(relative, name)
            if not canonical:
                raise UnsafeEntryError(name or ".", "is the bundle root, not a directory in it")
            # Its own descriptor, not one of the cache's (which may close them).
            parent = self._dir_fd(canonical[:-1], name)
            try:
                fd = os.open(canonical[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError as e:
                raise _refusal(name, e) from e
        return BundleDirectory(fd, lambda entry: self.name(f"{relative}/{entry}"))

    def list_dir(self, relative: str, *, limit: int = MAX_DIR_ENTRIES) -> list[str]:
        """The names in a directory, sorted; links resolved inside the bundle.

        Raises:
            UnsafeEntryError: also when it holds more than ``limit`` entries.
        """
        name = self.name(relative)
        with self._lock:
            canonical = self._resolve_dir(relative, name)
            fd = self._dir_fd(canonical, name)
            names: list[str] = []
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if len(names) == limit:
                            raise UnsafeEntryError(name, f"holds more than {limit} entries")
                        names.append(entry.name)
            except OSError as e:
                raise _refusal(name, e) from e
            return sorted(names)

    def walk_files(self, relative: str, pattern: tuple[str, ...]) -> Iterator[str]:
        """Paths ``relative/<a>/<b>/...`` whose depth matches ``pattern``; each element is
        a literal name or ``*`` (any directory or file name). Entries that do not exist
        are skipped; directories are listed safely."""
        yield from self._walk(_parts(relative), pattern)

    def _walk(self, prefix: tuple[str, ...], pattern: tuple[str, ...]) -> Iterator[str]:
        here = "/".join(prefix)
        if not pattern:
            yield here
            return
        head, rest = pattern[0], pattern[1:]
        if head != "*":
            child = (*prefix, head)
            if not rest:
                if self.exists("/".join(child)):
                    yield "/".join(child)
                return
            if self.is_dir("/".join(child)):
                yield from self._walk(child, rest)
            return
        if not self.is_dir(here):
            return
        for entry in self.list_dir(here):
            child = (*prefix, entry)
            if not rest:
                yield "/".join(child)
            elif self.is_dir("/".join(child)):
                yield from self._walk(child, rest)

    # -- resolution ---------------------------------------------------------------------------

    def _root(self, name: str) -> int:
        if self._root_fd is None:
            try:
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError as e:
                raise MissingEntryError(name, f"{self.root} does not exist") from e
            except OSError as e:
                raise _refusal(name, e) from e
        return self._root_fd

    def _dir_fd(self, canonical: tuple[str, ...], name: str) -> int:
        if not canonical:
            return self._root(name)
        fd = self._dirs.get(canonical)
        if fd is not None:
            return fd
        parent = self._dir_fd(canonical[:-1], name)
        try:
            fd = os.open(canonical[-1], _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            raise _refusal(name, e) from e
        if len(self._dirs) >= _DIR_CACHE_LIMIT:
            self._drop_dirs()
        self._dirs[canonical] = fd
        return fd

    def _drop_dirs(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _resolve_dir(self, relative: str, name: str) -> tuple[str, ...]:
        parts = (*self._base, *_parts(relative))
        if not parts:
            self._root(name)
            return ()
        _, _, info, canonical = self._lookup(parts, name, follow_last=True)
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeEntryError(name, f"is {describe_mode(info.st_mode)}, not a directory")
        return canonical

    def _resolve(
        self, relative: str, name: str, *, follow_last: bool
    ) -> tuple[int, str, os.stat_result]:
        parts = (*self._base, *_parts(relative))
        if not parts:
            raise UnsafeEntryError(name or ".", "is the bundle root, not a file")
        parent, last, info, _ = self._lookup(parts, name, follow_last=follow_last)
        return parent, last, info

    def _lookup(
        self, parts: tuple[str, ...], name: str, *, follow_last: bool
    ) -> tuple[int, str, os.stat_result, tuple[str, ...]]:
        """Resolve ``parts`` from the root: (parent fd, last name, its lstat, canonical)."""
        pending = list(reversed(parts))  # a stack: next component last
        resolved: list[str] = []  # real directories only, so ".." is their parent
        hops = 0
        while pending:
            component = pending.pop()
            if component in ("", "."):
                continue
            if component == "..":
                if not resolved:
                    raise UnsafeEntryError(name, "leads outside the bundle")
                resolved.pop()
                continue
            parent = self._dir_fd(tuple(resolved), name)
            try:
                info = os.stat(component, dir_fd=parent, follow_symlinks=False)
            except OSError as e:
                raise _refusal(name, e) from e
            is_last = not any(p not in ("", ".") for p in pending)
            if stat.S_ISLNK(info.st_mode) and (follow_last or not is_last):
                if not self._follow_links:
                    link = "/".join((*resolved, component))
                    raise UnsafeEntryError(
                        name,
                        "is a symlink where none may be"
                        if is_last
                        else f"has {link} as a symlink where none may be",
                    )
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise UnsafeEntryError(name, "is a symlink loop")
                pending.extend(reversed(_link_target(parent, component, name)))
                continue
            if is_last:
                return parent, component, info, (*resolved, component)
            if not stat.S_ISDIR(info.st_mode):
                raise UnsafeEntryError(
                    name,
                    f"has {'/'.join((*resolved, component))} as "
                    f"{describe_mode(info.st_mode)}, not a directory",
                )
            resolved.append(component)
        # The path ended on ".." (a link to a parent directory): that directory is the entry.
        if not resolved:
            raise UnsafeEntryError(name, "is the bundle root, not an entry in it")
        parent = self._dir_fd(tuple(resolved[:-1]), name)
        try:
            info = os.stat(resolved[-1], dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise _refusal(name, e) from e
        return parent, resolved[-1], info, tuple(resolved)


class BundleDirectory:
    """The entries of one directory of the bundle, by name, no link followed at all (not
    even inside the bundle: resolve those through :class:`BundleFiles`). One ``fstatat``
    per entry and no lock: safe to share between threads.

    Raises (every method): MissingEntryError, UnsafeEntryError, DriveIOError, naming the
    entry as the bundle spells it.
    """

    def __init__(self, fd: int, name: Callable[[str], str]) -> None:
        self._fd = fd
        self._name = name

    def __enter__(self) -> BundleDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the directory's descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def lstat(self, entry: str) -> os.stat_result:
        """The entry itself (a link is reported as one)."""
        name = self._name(_entry(entry))
        try:
            return os.stat(entry, dir_fd=self._fd, follow_symlinks=False)
        except OSError as e:
            raise _refusal(name, e) from e

    def open(self, entry: str, *, info: os.stat_result | None = None) -> BinaryIO:
        """A regular file, opened as :meth:`BundleFiles.open` opens one; a link is refused.
        ``info``: the entry's :meth:`lstat`, when the caller took it already."""
        name = self._name(_entry(entry))
        if info is None:
            info = self.lstat(entry)
        return _opened(_open_checked(self._fd, entry, info, name), info, name)

    def read(self, entry: str, *, limit: int, info: os.stat_result | None = None) -> bytes:
        """A whole regular file of at most ``limit`` bytes (as :meth:`BundleFiles.read`)."""
        with self.open(entry, info=info) as f:
            return _read_bounded(f, self._name(entry), limit)

    def read_head(self, entry: str, count: int, *, info: os.stat_result | None = None) -> bytes:
        """The first ``count`` bytes (or fewer) of a regular file."""
        with self.open(entry, info=info) as f:
            return _read_head(f, self._name(entry), count)


def _entry(entry: str) -> str:
    if "/" in entry or entry in ("", ".", ".."):
        raise ValueError(f"{entry!r} is not a name in a directory")
    return entry


def _open_checked(parent: int, last: str, info: os.stat_result, name: str) -> int:
    """Open ``last`` in ``parent`` after its ``lstat`` said it is a regular file."""
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeEntryError(name, f"is {describe_mode(info.st_mode)}, not a regular file")
    try:
        return os.open(last, _FILE_FLAGS, dir_fd=parent)
    except OSError as e:
        raise _refusal(name, e) from e


def _opened(fd: int, info: os.stat_result, name: str) -> BinaryIO:
    """``fd`` as a file, once ``fstat`` agrees it is the regular file ``lstat`` saw."""
    try:
        opened = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise DriveIOError(name, e) from e
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
        info.st_dev,
        info.st_ino,
    ):
        os.close(fd)
        raise UnsafeEntryError(name, "changed while it was being opened")
    return os.fdopen(fd, "rb")


def _read_bounded(f: BinaryIO, name: str, limit: int) -> bytes:
    try:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise UnsafeEntryError(name, f"is {size} bytes, over its {limit}-byte limit")
        data = f.read(limit + 1)
    except OSError as e:
        raise DriveIOError(name, e) from e
    if len(data) > limit:
        raise UnsafeEntryError(name, f"is over its {limit}-byte limit")
    return data


def _read_head(f: BinaryIO, name: str, count: int) -> bytes:
    try:
        return f.read(count)
    except OSError as e:
        raise DriveIOError(name, e) from e


def _parts(relative: str) -> tuple[str, ...]:
    if relative.startswith("/"):
        raise ValueError(f"{relative!r} is not a relative path")
    return tuple(p for p in relative.split("/") if p not in ("", "."))


def _link_target(parent: int, link: str, name: str) -> tuple[str, ...]:
    """The components a link inside the bundle points to; an absolute one leaves it."""
    try:
        target = os.readlink(link, dir_fd=parent)
    except OSError as e:
        raise _refusal(name, e) from e
    if target.startswith("/"):
        raise UnsafeEntryError(name, f"is a symlink to {target}, outside the bundle")
    return PurePosixPath(target).parts


def _refusal(name: str, error: OSError) -> DriveEntryError:
    if error.errno in (errno.ENOENT,):
        return MissingEntryError(name, "is missing")
    if error.errno == errno.ELOOP:
        return UnsafeEntryError(name, "is a symlink where none may be")
    if error.errno in (errno.ENOTDIR, errno.ENXIO, errno.EACCES, errno.EPERM):
        return UnsafeEntryError(name, f"cannot be opened: {error.strerror}")
    return DriveIOError(name, error)
