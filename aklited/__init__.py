"""aklited: offline updates for LmP devices from removable media."""

__version__ = "0.1.0"
