"""The wheel ships every page, static file and sandbox document: package-data covers each file.

The full check (build the wheel, install it in a clean venv outside the repository, serve the
login page from it) is .ci/wheel-check, run by .ci/run.
"""
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]


@pytest.mark.parametrize("package, folder", [
    ("automations", "templates"), ("automations", "static"), ("sandbox", "documents"),
])
def test_package_data_covers_every_file(package, folder):
    base = ROOT / package.replace(".", "/")
    on_disk = {p.relative_to(base) for p in (base / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk, f"{package}/{folder} is empty"
    shipped = {p.relative_to(base) for pattern in PACKAGE_DATA[package] for p in base.glob(pattern) if p.is_file()}
    assert sorted(map(str, on_disk - shipped)) == []


def test_templates_live_inside_the_package():
    # A folder outside a package is not in the wheel; settings look for pages inside automations/.
    assert not (ROOT / "templates").exists()
    assert (ROOT / "automations" / "templates" / "base.html").is_file()
