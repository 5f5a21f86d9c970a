"""The python-tuf verifier back-end: ngclient's Updater, fed the bundle instead of the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from adapter import VERSIONED, TargetInfo, target_info
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

BUNDLE_URL = "bundle:///"  # the fetcher's base URL: never a network request


class BundleFetcher(FetcherInterface):
    """A python-tuf fetcher that answers from the bundle directory, never the network.

    ``N.root.json`` and ``timestamp.json`` are served as named; any other role is served
    from its unversioned file, whatever version the Updater asks for (the bundle layout):
    the Updater then checks the version inside.
    """

    def __init__(self, tuf_dir: Path) -> None:
        """Args:
        tuf_dir: The bundle's ``tuf/`` directory.
        """
        self.tuf_dir = tuf_dir

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix(BUNDLE_URL)
        path = self._resolve(name)
        if path is None:
            raise DownloadHTTPError(f"{name}: not in the bundle", 404)
        return iter([path.read_bytes()])

    def _resolve(self, name: str) -> Path | None:
        if "/" in name or name in ("", ".", ".."):
            return None
        exact = self.tuf_dir / name
        if name.endswith(".root.json") or name == "timestamp.json":
            return exact if exact.is_file() else None
        if exact.is_file():
            return exact
        match = VERSIONED.fullmatch(name)
        if match is not None and (self.tuf_dir / match["rest"]).is_file():
            return self.tuf_dir / match["rest"]
        return None


class PythonTufVerifier:
    """python-tuf's ngclient Updater, fed the bundle through :class:`BundleFetcher`."""

    def __init__(self, metadata_dir: Path, tuf_dir: Path) -> None:
        """Args:
        metadata_dir: Trusted metadata (python-tuf's metadata_dir).
        tuf_dir: The bundle's ``tuf/`` directory.
        """
        self.metadata_dir = metadata_dir
        self.tuf_dir = tuf_dir
        self.updater: Updater | None = None

    def load_trusted_root(self) -> None:
        """Updater() loads and verifies ``root.json`` before it fetches anything."""
        self.updater = Updater(
            str(self.metadata_dir),
            BUNDLE_URL,
            fetcher=BundleFetcher(self.tuf_dir),
            bootstrap=None,
        )

    def _updater(self) -> Updater:
        if self.updater is None:
            raise RuntimeError("load_trusted_root() first")
        return self.updater

    def verify(self) -> None:
        """Updater.refresh(): root, timestamp, snapshot, top-level targets."""
        self._updater().refresh()

    def find_target(self, path: str) -> TargetInfo | None:
        """Updater.get_targetinfo(): walks delegations, loading them from the bundle."""
        return target_info(path, self._updater().get_targetinfo(path))


Verifier = PythonTufVerifier
