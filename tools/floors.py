#!/usr/bin/env python
"""Print pip constraints that pin each core dependency of ``pyproject.toml`` to its floor.

    python tools/floors.py > floors.txt      # torch==2.3, numpy==1.24, ...
    pip install -c floors.txt -e ".[test]"   # what ``make test-min`` does

A floor is the version after ``>=``; a dependency without one is left free. Installing
exactly the floors and running the unit tests is what makes the floors true.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def floors(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """``{name: floor}`` of the ``[project] dependencies`` that have a ``>=`` bound."""
    found = {}
    for line in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]:
        requirement = Requirement(line)
        lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if lows:
            found[requirement.name] = max(lows, key=Version)
    return found


def main() -> int:
    sys.stdout.write("".join(f"{name}=={version}\n" for name, version in floors().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
