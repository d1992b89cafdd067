"""Package discovery for the single `avel` import namespace.

The repository keeps the user-facing top-level folders (`datasets/`, `extractors/`,
`models/`, `pipeline/`). Each is linked into the package by a committed relative symlink
(`avel/datasets -> ../datasets`, ...), so `avel.datasets.store` is the file
`avel/datasets/store.py` for Python, IDEs, type checkers and import-graph tools alike, and
nothing named `datasets` or `models` lands in site-packages. See docs/architecture.md.
Metadata lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup

# import name -> top-level folder it links to
ROOTS = {
    "avel.datasets": "datasets",
    "avel.extractors": "extractors",
    "avel.models": "models",
    "avel.pipeline": "pipeline",
}

here = Path(__file__).resolve().parent
for package, folder in ROOTS.items():
    link = here / package.replace(".", "/")
    if not (link.is_symlink() and link.resolve() == here / folder):
        raise SystemExit(f"{link} must be a symlink to ../{folder} (git config core.symlinks true)")

setup(packages=find_packages(include=["avel", "avel.*"]), package_data={"avel": ["py.typed"]})
