"""A simulated LmP device: OSTree trees, bundle repos and a sysroot in a directory.

Used by the tests and the demo; nothing here runs on a real device.
"""

from aklited_sim.sysroot import (
    DEFAULT_KARGS,
    SimDevice,
    commit_tree,
    deploy_commit,
    init_repo,
    init_sysroot,
    make_device,
    make_tree,
    reboot,
    remove_tree,
    write_random_files,
)

__all__ = [
    "DEFAULT_KARGS",
    "SimDevice",
    "commit_tree",
    "deploy_commit",
    "init_repo",
    "init_sysroot",
    "make_device",
    "make_tree",
    "reboot",
    "remove_tree",
    "write_random_files",
]
