"""A bundle repo's mode is read from its config as ostree reads it, so the walk checks the
objects ostree will open; a config that would lead ostree elsewhere is refused."""

from __future__ import annotations

import pytest

from aklited.rootfs.walk import CorruptObjectError, repo_mode


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        ("[core]\nrepo_version=1\nmode=archive-z2\n", "archive-z2"),
        ("# made by the factory\n[core]\n  mode = archive\n", "archive"),
        ("[core]\r\nrepo_version=1\r\nmode=archive-z2\r\n", "archive-z2"),
        ("[core]  \nmode\t=\tarchive\n", "archive"),
        ("[core]\nrepo_version=1\n", "bare"),  # ostree's default
        # Keys are case-sensitive and only "=" separates: ostree reads "mode" alone.
        ("[core]\nmode=archive-z2\nMode=bare\n", "archive-z2"),
        ("[core]\nmode:archive=bare\nmode=archive\n", "archive"),
        ('[remote "origin"]\nmode=bare\n[core]\nmode=archive\n', "archive"),
    ],
)
def test_the_mode_ostree_reads(config: str, mode: str) -> None:
    assert repo_mode(config) == mode


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("[core]\nmode=archive\nmode=bare\n", "twice"),
        ("[core]\nmode=archive\n[core]\nmode=bare\n", "twice"),
        ("[core]\nmode=archive\nparent=/run/aklited/media/sdb1/repo\n", "core.parent"),
        ("[core]\nmode=archive\nadd-remotes-config-dir=true\n", "add-remotes-config-dir"),
        ("[core]\nmode=bare-split-xattrs\n", "mode 'bare-split-xattrs'"),
        ("[core]\nmode=tarball\n", "mode 'tarball'"),
        ("mode=archive\n", "not a key=value line in a group"),
        ("[core\nmode=archive\n", "not a group header"),
        ("[core]\nmode archive\n", "not a key=value line"),
        # GLib keeps a blank after a value: ostree would not know "archive ".
        ("[core]\nmode=archive \n", "mode 'archive '"),
        # Read one way by GLib and another by Python: refused outright.
        ("[core]\nrepo_version=1\nx=\r[r]\nmode=archive-z2\n", "not plain ASCII"),
        ("[core]\nrepo_version=1\n\u00a0mode=archive-z2\n", "not plain ASCII"),
        ("[core]\nmode=archive\x1c\n", "not plain ASCII"),
        ("[core]]\nmode=archive\n", "not a group header"),
    ],
)
def test_a_config_ostree_would_read_otherwise_is_refused(config: str, says: str) -> None:
    with pytest.raises(CorruptObjectError, match=says):
        repo_mode(config, "ostree_repo/config")
