"""``make demo``: a simulated device takes an offline update from a simulated USB drive.

The end-to-end demo needs the update engine; until it is part of aklited this says so.
"""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "aklited demo: the end-to-end offline update demo arrives with the update engine;\n"
        "today `aklite-offline config` and `aklite-offline check -s BUNDLE` are available.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
