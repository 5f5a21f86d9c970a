"""The daemon: udev -> media -> engine -> D-Bus.

Planned parts (DESIGN section 2): ``runner`` (setup and teardown, sd_notify), ``jobs`` (one
update at a time), ``media`` (udev, safe mounts, bundle discovery) and ``service`` (the D-Bus
interface). Only the entry point exists in this build.
"""
