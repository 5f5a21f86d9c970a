"""``aklitectl``: the D-Bus client for a running aklited.

Not part of this build yet: it arrives with the daemon.
"""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "aklitectl: not available in this build yet (it arrives with the daemon)", file=sys.stderr
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
