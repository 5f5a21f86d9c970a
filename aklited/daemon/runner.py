"""``aklited``: the long-running daemon (udev -> media -> engine -> D-Bus).

Not part of this build yet: the engine it wraps comes first.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("aklited: the daemon is not available in this build yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
