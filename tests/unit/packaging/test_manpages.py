"""The manual pages in packaging/man are what scripts/manpages.py writes from the code.

A changed option, exit code or configuration key without regenerated pages fails here:
run ``make man`` and commit the pages.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aklited.config import DEFAULT_SOURCES, DEFAULTS
from aklited.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH
from aklited.outcomes import StatusCode

REPO = Path(__file__).resolve().parents[3]
MAN = REPO / "packaging/man"
SCRIPT = REPO / "scripts/manpages.py"
UNIT = REPO / "packaging/systemd/aklited.service"
PAGES = ("aklite-offline.1", "aklitectl.1", "aklite-bundle.1", "aklited.8")


def _page(name: str) -> str:
    return (MAN / name).read_text()


def _sections(text: str) -> list[str]:
    return re.findall(r"^\.SH (.+)$", text, flags=re.MULTILINE)


def test_the_committed_pages_are_what_the_generator_writes(tmp_path: Path) -> None:
    # The generator keeps a page's date while its text is unchanged: start from the
    # committed pages so that an up-to-date page comes out byte for byte the same.
    for name in PAGES:
        assert (MAN / name).is_file(), f"{name} is missing: run `make man`"
        shutil.copy(MAN / name, tmp_path / name)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PAGES)
    for name in PAGES:
        fresh = (tmp_path / name).read_text()
        diff = "".join(
            difflib.unified_diff(
                _page(name).splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                f"packaging/man/{name}",
                "regenerated",
            )
        )
        assert not diff, f"packaging/man/{name} is out of date: run `make man`\n{diff}"


def test_the_unit_documents_the_pages_that_exist() -> None:
    # systemd-analyze verify looks every Documentation=man: page up; a page named there must
    # exist with the section named there.
    line = re.search(r"^Documentation=(.+)$", UNIT.read_text(), flags=re.MULTILINE)
    assert line
    refs = re.findall(r"man:([\w.-]+)\((\d)\)", line[1])
    assert refs
    for name, section in refs:
        text = _page(f"{name}.{section}")
        title = name.upper().replace("-", "\\-")
        assert text.startswith(f'.TH {title} "{section}" '), f"{name}.{section}"


@pytest.mark.parametrize("name", PAGES)
def test_every_page_has_the_usual_sections(name: str) -> None:
    sections = _sections(_page(name))
    assert sections[:3] == ["NAME", "SYNOPSIS", "DESCRIPTION"]
    assert "OPTIONS" in sections
    assert sections[-1] == "SEE ALSO"


@pytest.mark.parametrize("name", ["aklite-offline.1", "aklitectl.1"])
def test_the_exit_status_lists_every_status_code(name: str) -> None:
    text = _page(name)
    assert "EXIT STATUS" in _sections(text)
    codes = {int(n) for n in re.findall(r"^\.TP\n\\fB(\d+)\\fR$", text, flags=re.MULTILINE)}
    assert {int(code) for code in StatusCode} <= codes


@pytest.mark.parametrize("name", ["aklite-offline.1", "aklited.8"])
def test_the_configuration_names_every_key_and_the_default_paths(name: str) -> None:
    text = _page(name).replace("\\%", "").replace("\\-", "-")
    assert {"CONFIGURATION", "FILES"} <= set(_sections(text))
    tables = dict.fromkeys(section for section, _ in DEFAULTS)
    for section in tables:
        assert f".SS [{section}]" in text
    for _, key in DEFAULTS:
        assert f"\\fB{key}\\fR" in text, key
    for source in DEFAULT_SOURCES:
        assert f"\\fB{source}\\fR" in text
    assert "\\fB/var/sota/aklited.db\\fR" in text


def test_the_daemon_page_names_its_bus_and_unit() -> None:
    text = _page("aklited.8").replace("\\%", "").replace("\\-", "-")
    for name in (BUS_NAME, INTERFACE, OBJECT_PATH, UNIT.name):
        assert name in text


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff (apt-get install groff-base)")
@pytest.mark.parametrize("name", PAGES)
def test_the_page_renders_without_warnings(name: str) -> None:
    # -ww: every warning groff has, among them text it cannot break and unknown requests.
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr, done.stderr
