"""``python -m aklite_bundle``: the workstation tool without an installed entry point."""

import sys

from aklite_bundle.cli import main

sys.exit(main())
