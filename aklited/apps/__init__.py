"""Compose Apps: verify an app store, copy it to the device, load images, run compose projects.

The engine's port is :class:`aklited.apps.port.ComposeAppsPort` over
:class:`aklited.apps.adapter.ComposeApps`; a device without apps uses
:class:`aklited.apps.absent.NoApps`. Nothing is imported here, so that importing a part
(the blob checks, the app store reader) never loads the Docker client libraries.
"""
