"""Building and signing offline-update bundles in the Foundries (fioctl) dialect."""
