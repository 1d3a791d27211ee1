"""Check that the committed lock still satisfies pyproject.toml, and that .venv holds exactly
the locked versions. Run by scripts/test before anything else (and by tests/unit/test_lock.py),
so a dependency changed in pyproject.toml without `scripts/lock` fails with a message that
says how to refresh the lock, not with an import error three tools later.

    .venv/bin/python scripts/check_lock.py      # exit 0, or 1 with every problem listed
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.lock.txt", "requirements.model.lock.txt")
EXTRAS = ("local", "test", "modal")  # what `scripts/serve` and `scripts/test` install
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(root: Path = ROOT) -> dict[str, Version]:
    """Every ``name==version`` line of the lock files, by canonical name."""
    pins: dict[str, Version] = {}
    for name in LOCKS:
        for line in (root / name).read_text().splitlines():
            if match := _PIN.match(line):
                pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def wanted(root: Path = ROOT) -> list[Requirement]:
    """What pyproject.toml asks for: dependencies, the extras installed, the build backend."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    texts = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    for extra in EXTRAS:
        texts += project["project"]["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def problems(root: Path = ROOT, *, installed: bool = True) -> list[str]:
    pins = locked(root)
    found = []
    for req in wanted(root):
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # not for this platform
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            found.append(f"{req.name} is in pyproject.toml but not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"pyproject.toml asks for {req}, the lock has {version}")
    if installed:
        for name, version in sorted(pins.items()):
            try:
                have = Version(metadata.version(name))
            except metadata.PackageNotFoundError:
                found.append(f"{name}=={version} is locked but not installed")
                continue
            if have != version:
                found.append(f"{name}=={version} is locked, {have} is installed")
    return found


def main(root: Path = ROOT, *, installed: bool = True) -> int:
    found = problems(root, installed=installed)
    if not found:
        return 0
    print("The environment does not match the committed lock:", file=sys.stderr)
    for line in found:
        print(f"  - {line}", file=sys.stderr)
    print(
        "If you changed pyproject.toml: run scripts/lock and commit pyproject.toml with "
        "requirements.lock.txt and requirements.model.lock.txt.\n"
        "If the lock changed under you (a pull): run scripts/bootstrap local,test,modal "
        "(or delete .venv).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
