"""TUF verification of offline bundles, in both metadata dialects.

* :mod:`~aklited.tuf.canonical`: the canonical JSON each dialect signs.
* :mod:`~aklited.tuf.keys`: public keys and signature checks.
* :mod:`~aklited.tuf.metadata`: parsing into typed, immutable values.
* :mod:`~aklited.tuf.trusted`: the forward-only trusted set (checks only, no I/O).
* :mod:`~aklited.tuf.delegations`: which role provides a target (delegation search).
* :mod:`~aklited.tuf.workflow`: the client workflow on a source, persisting what verified.
* :mod:`~aklited.tuf.source` / :mod:`~aklited.tuf.storage`: where metadata is read and kept.
"""

from aklited.tuf.keys import Dialect
from aklited.tuf.source import DEFAULT_LIMITS, DirectorySource, MetadataSource, SizeLimits
from aklited.tuf.storage import DirectoryTrustStore, OverlayTrustStore, TrustStore
from aklited.tuf.workflow import TrustWorkflow, VerifiedMetadata

__all__ = [
    "DEFAULT_LIMITS",
    "Dialect",
    "DirectorySource",
    "DirectoryTrustStore",
    "MetadataSource",
    "OverlayTrustStore",
    "SizeLimits",
    "TrustStore",
    "TrustWorkflow",
    "VerifiedMetadata",
]
