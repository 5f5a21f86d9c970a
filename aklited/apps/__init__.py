"""Compose Apps: verify an app store, copy it to the device, load images, run compose projects.

The engine uses :class:`ComposeApps`; the other names describe what it returns.
"""

from aklited.apps.adapter import DEFAULT_COMPOSE_ROOT, DEFAULT_STORE_ROOT, ComposeApps
from aklited.apps.blobs import Blob
from aklited.apps.compose import AppStatus, ServiceStatus
from aklited.apps.model import App, AppImage, Service
from aklited.apps.platforms import Platform

__all__ = [
    "DEFAULT_COMPOSE_ROOT",
    "DEFAULT_STORE_ROOT",
    "App",
    "AppImage",
    "AppStatus",
    "Blob",
    "ComposeApps",
    "Platform",
    "Service",
    "ServiceStatus",
]
