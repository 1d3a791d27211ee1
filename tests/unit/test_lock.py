"""The committed lock: it satisfies pyproject.toml, .venv holds exactly it, and the XGrammar
version is one version everywhere (config/tiers.toml is the source)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gateway.structured import rules
from gateway.tierspec import load_tier_specs

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import check_lock  # noqa: E402  (scripts/ is not a package)


def test_the_lock_satisfies_pyproject_and_is_what_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_lock.py")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_lock_that_no_longer_satisfies_pyproject_says_how_to_refresh_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("pyproject.toml", *check_lock.LOCKS):
        (tmp_path / name).write_text((ROOT / name).read_text())
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"msgspec>=0.22,<0.23"', '"msgspec>=0.23"'))
    locked = check_lock.locked(ROOT)["msgspec"]

    assert check_lock.main(tmp_path, installed=False) == 1
    message = capsys.readouterr().err
    assert f"pyproject.toml asks for msgspec>=0.23, the lock has {locked}" in message
    assert "run scripts/lock" in message


def test_the_lock_names_no_index_or_host() -> None:
    for name in check_lock.LOCKS:
        text = (ROOT / name).read_text()
        assert not re.search(r"https?://|--(extra-)?index-url|--find-links|file:", text), name


def test_every_locked_line_has_a_hash() -> None:
    for name in check_lock.LOCKS:
        blocks = re.split(r"\n(?=\S)", (ROOT / name).read_text())
        pins = [b for b in blocks if check_lock._PIN.match(b)]
        assert pins, name
        assert all("--hash=sha256:" in b for b in pins), name


def test_xgrammar_is_one_version_everywhere() -> None:
    """config/tiers.toml's xgrammar_version (what the tiers' vLLM pins) is the version of the
    rule table, the `local` extra, the lock and the installed package."""
    specs = load_tier_specs(ROOT / "config" / "tiers.toml")
    (version,) = {spec.xgrammar_version for spec in specs.values()}
    assert version == rules.XGRAMMAR_VERSION
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    local = [Requirement(r) for r in project["project"]["optional-dependencies"]["local"]]
    (xgrammar,) = [r for r in local if r.name == "xgrammar"]
    assert str(xgrammar.specifier) == f"=={version}"
    assert str(check_lock.locked(ROOT)["xgrammar"]) == version
    pytest.importorskip("xgrammar")
    from xgrammar import _version  # the wheel's own record of its version

    assert _version.version == version
