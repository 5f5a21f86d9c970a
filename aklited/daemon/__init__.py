"""The daemon: udev -> media -> engine -> D-Bus.

``runner`` owns setup and teardown (and sd_notify through ``notify``), ``jobs`` runs one
update at a time and keeps the status, ``service`` is the D-Bus interface. ``media`` (udev,
safe mounts, bundle discovery) comes next.
"""
