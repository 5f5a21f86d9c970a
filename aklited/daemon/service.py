"""The D-Bus interface ``io.foundries.aklited.Updater1`` (packaging/dbus/*.xml is its contract).

Methods hand work to :class:`~aklited.daemon.jobs.Jobs` and return at once (Check waits: it
only reads). Every status change becomes one ``PropertiesChanged``; the end of every
install and run one ``Completed``. A failure is a D-Bus error named after its status code,
never a traceback.
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
# annotations at class creation.

import re
from pathlib import Path
from typing import Annotated, Any

import structlog
from dbus_fast import PropertyAccess, Variant
from dbus_fast.annotations import DBusSignature
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from aklited.daemon.jobs import Jobs, Status
from aklited.engine.model import CheckResult
from aklited.errors import AkliteError, InternalError
from aklited.outcomes import StatusCode

log = structlog.get_logger(__name__)

BUS_NAME = "io.foundries.aklited"
OBJECT_PATH = "/io/foundries/aklited"
INTERFACE = "io.foundries.aklited.Updater1"
ERROR_PREFIX = "io.foundries.aklited.Error."

Str = Annotated[str, DBusSignature("s")]
Int = Annotated[int, DBusSignature("i")]
Options = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Progress = Annotated[list[Any], DBusSignature("(isi)")]
Result = Annotated[list[Any], DBusSignature("(is)")]
CodeAndMessage = Annotated[list[Any], DBusSignature("is")]
Media = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]


def error_name(code: StatusCode) -> str:
    """The D-Bus error for an outcome: one per status code, named after it."""
    return ERROR_PREFIX + "".join(part.capitalize() for part in code.name.split("_"))


def dbus_error(err: AkliteError) -> DBusError:
    return DBusError(error_name(err.code), err.message)


def _variant(value: Any) -> Variant:
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, dict):
        return Variant("a{ss}", {str(k): str(v) for k, v in value.items()})
    return Variant("s", str(value))


def variants(mapping: Any) -> dict[str, Variant]:
    return {key: _variant(value) for key, value in mapping.items()}


def check_dict(result: CheckResult) -> dict[str, Variant]:
    target = result.target
    reason = (
        f"the device already runs {target.name}"
        if result.code == StatusCode.OK
        else f"{target.name} can be installed"
    )
    return {
        "code": Variant("i", int(result.code)),
        **variants(
            {
                "target": target.name,
                "version": target.version,
                "ostree_commit": target.ostree_commit,
                "apps": dict(target.apps),
                "reason": reason,
            }
        ),
    }


_PROPERTY_OF_FIELD = {
    "state": "State",
    "progress": "Progress",
    "current": "CurrentTarget",
    "pending": "PendingTarget",
    "last_result": "LastResult",
}


class UpdaterService(ServiceInterface):
    """io.foundries.aklited.Updater1 over :class:`Jobs`."""

    def __init__(self, jobs: Jobs) -> None:
        super().__init__(INTERFACE)
        self._jobs = jobs
        self._media: list[dict[str, Any]] = []
        jobs.on_completed(self.Completed)

    # ---- changes ----------------------------------------------------------------------------

    def status_changed(self, before: Status, after: Status) -> None:
        changed = {
            prop: self._property_value(prop, after)
            for field, prop in _PROPERTY_OF_FIELD.items()
            if getattr(before, field) != getattr(after, field)
        }
        if changed:
            self.emit_properties_changed(changed)

    def media_changed(self, media: list[dict[str, Any]]) -> None:
        self._media = media
        self.emit_properties_changed({"Media": [variants(drive) for drive in media]})

    @staticmethod
    def _property_value(prop: str, status: Status) -> Any:
        match prop:
            case "State":
                return str(status.state)
            case "Progress":
                return list(status.progress)
            case "CurrentTarget":
                return variants(status.current)
            case "PendingTarget":
                return variants(status.pending)
            case _:
                return list(status.last_result)

    # ---- methods ----------------------------------------------------------------------------

    @dbus_method()
    def Install(self, src_dir: Str, options: Options) -> None:
        force = options.get("force")
        target = options.get("target")
        try:
            self._jobs.start_install(
                Path(src_dir),
                force=bool(force.value) if force is not None else False,
                target=str(target.value) if target is not None and target.value else None,
            )
        except AkliteError as e:
            raise dbus_error(e) from e
        log.info("install requested over D-Bus", src_dir=src_dir)

    @dbus_method()
    async def Check(self, src_dir: Str) -> Options:
        try:
            result = await self._jobs.check(Path(src_dir))
        except AkliteError as e:
            raise dbus_error(e) from e
        except Exception as e:
            log.exception("check failed unexpectedly")
            raise dbus_error(InternalError.wrap(e)) from e
        return check_dict(result)

    @dbus_method()
    def Run(self) -> None:
        try:
            self._jobs.start_run()
        except AkliteError as e:
            raise dbus_error(e) from e

    # ---- signals ----------------------------------------------------------------------------

    @dbus_signal()
    def Completed(self, code: int, message: str) -> CodeAndMessage:
        return [code, message]

    # ---- properties -------------------------------------------------------------------------

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> Str:
        return str(self._jobs.status.state)

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> Progress:
        return list(self._jobs.status.progress)

    @dbus_property(access=PropertyAccess.READ)
    def CurrentTarget(self) -> Options:
        return variants(self._jobs.status.current)

    @dbus_property(access=PropertyAccess.READ)
    def PendingTarget(self) -> Options:
        return variants(self._jobs.status.pending)

    @dbus_property(access=PropertyAccess.READ)
    def LastResult(self) -> Result:
        return list(self._jobs.status.last_result)

    @dbus_property(access=PropertyAccess.READ)
    def Media(self) -> Media:
        return [variants(drive) for drive in self._media]


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def code_of_error(name: str) -> StatusCode | None:
    """The status code a D-Bus error name stands for (for clients such as aklitectl)."""
    if not name.startswith(ERROR_PREFIX):
        return None
    key = _CAMEL.sub("_", name.removeprefix(ERROR_PREFIX)).upper()
    return StatusCode.__members__.get(key)
