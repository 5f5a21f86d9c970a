"""The options every aklited program reads its configuration and log level with.

``aklite-offline`` and ``aklited`` read the configuration the same way (DESIGN 3.2a), so a
whole simulated device is one ``-c DIR`` for either.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def common_options(*, top_level: bool) -> argparse.ArgumentParser:
    # Options are accepted before and after the command, as aktualizr-lite accepts them;
    # on sub-commands they must not reset what was given before the command.
    default: Any = None if top_level else argparse.SUPPRESS
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        type=Path,
        default=[] if top_level else argparse.SUPPRESS,
        metavar="PATH",
        help="a *.toml file or a directory of them; repeat to add more (later ones win)",
    )
    parser.add_argument(
        "--log-level",
        type=int,
        choices=range(6),
        default=2 if top_level else default,
        metavar="0..5",
        help="0 trace, 1 debug, 2 info (default), 3 warning, 4 error, 5 fatal",
    )
    return parser
