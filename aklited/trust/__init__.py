"""TUF verification of offline bundles, in both metadata dialects.

* :mod:`~aklited.trust.canonical`: the canonical JSON each dialect signs.
* :mod:`~aklited.trust.keys`: public keys and signature checks.
* :mod:`~aklited.trust.metadata`: parsing into typed, immutable values.
* :mod:`~aklited.trust.trusted`: the forward-only trusted set (checks only, no I/O).
* :mod:`~aklited.trust.delegations`: which role provides a target (delegation search).
* :mod:`~aklited.trust.workflow`: the client workflow on a source, persisting what verified.
* :mod:`~aklited.trust.source` / :mod:`~aklited.trust.storage`: where metadata is read and kept.
"""

from aklited.trust.keys import Dialect
from aklited.trust.source import DEFAULT_LIMITS, DirectorySource, MetadataSource, SizeLimits
from aklited.trust.storage import DirectoryTrustStore, OverlayTrustStore, TrustStore
from aklited.trust.workflow import TrustWorkflow, VerifiedMetadata

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
