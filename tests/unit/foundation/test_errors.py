"""The exception tree: each type's outcome is the one its docstring names, every failure
outcome has a type that raises it, and nothing picks a code at a raise site."""

from __future__ import annotations

import inspect
import re

import pytest

from aklited import errors
from aklited.errors import AkliteError
from aklited.outcomes import StatusCode

TYPES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, AkliteError) and cls.__module__ == errors.__name__
]
# Leaves of the tree errors.py defines (modules may refine a leaf, as loader.py does).
LEAVES = [cls for cls in TYPES if not any(sub in TYPES for sub in cls.__subclasses__())]

# Outcomes the engine settles an update with; no exception stands for them.
NOT_ERRORS = {
    StatusCode.UNKNOWN_ERROR,
    StatusCode.ROLLBACK_OK,
    StatusCode.ROLLBACK_FAILED,
    StatusCode.NO_PENDING_INSTALLATION,
}

# "(70)", "(area base; 11)", "(1, as aktualizr-lite answers)", "(4): not the metadata's fault"
_NAMED_CODE = re.compile(r"\((?:area base; )?(\d+)\b")


def _named_code(cls: type[AkliteError]) -> StatusCode:
    match = _NAMED_CODE.search(cls.__doc__ or "")
    return StatusCode(int(match[1])) if match else StatusCode.UNKNOWN_ERROR


@pytest.mark.parametrize("cls", TYPES, ids=lambda cls: cls.__name__)
def test_code_is_the_one_the_docstring_names(cls: type[AkliteError]) -> None:
    assert cls.__doc__, f"{cls.__name__} has no docstring"
    assert cls.default_code == _named_code(cls)


def test_every_failure_outcome_has_a_leaf_type() -> None:
    failures = {code for code in StatusCode if not code.is_success} - NOT_ERRORS
    covered = {cls.default_code for cls in LEAVES}
    assert failures - covered == set()


@pytest.mark.parametrize("cls", LEAVES, ids=lambda cls: cls.__name__)
def test_an_instance_carries_its_type_code(cls: type[AkliteError]) -> None:
    if cls is errors.PendingInstallError:
        error: AkliteError = errors.PendingInstallError("one line", target="t")
    else:
        error = cls("one line")
    assert error.code == cls.default_code
    assert error.message == str(error) == "one line"


def test_no_raise_site_picks_a_code() -> None:
    with pytest.raises(TypeError):
        errors.AppsRunError("image load failed", code=StatusCode.NO_SPACE)  # type: ignore[call-arg]


def test_outcome_bases_gather_rootfs_and_apps() -> None:
    assert issubclass(errors.RootfsCopyError, errors.CopyFailedError)
    assert issubclass(errors.AppsCopyError, errors.CopyFailedError)
    assert issubclass(errors.BundleContentUnreadableError, errors.CopyFailedError)
    assert issubclass(errors.RootfsNoSpaceError, errors.NoSpaceError)
    assert issubclass(errors.AppsNoSpaceError, errors.NoSpaceError)
    assert issubclass(errors.RootfsCorruptError, errors.ContentMismatchError)
    assert issubclass(errors.AppsCorruptError, errors.ContentMismatchError)
    assert issubclass(errors.BundleContentRejectedError, errors.ContentMismatchError)


def test_transitional_names_are_gone() -> None:
    for name in ("StoreError", "OstreeError", "BundleError"):
        assert not hasattr(errors, name)
