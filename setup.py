"""Package discovery for the single `avel` import namespace.

The repository keeps the user-facing top-level folders (`datasets/`, `extractors/`,
`models/`, `pipeline/`), but they install as subpackages of `avel` so nothing named
`datasets` or `models` lands in site-packages. Metadata lives in pyproject.toml.
"""
from setuptools import find_packages, setup

ROOTS = {
    "avel": "avel",
    "avel.datasets": "datasets",
    "avel.extractors": "extractors",
    "avel.models": "models",
    "avel.pipeline": "pipeline",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for package, folder in ROOTS.items():
    packages.append(package)
    package_dir[package] = folder
    for sub in find_packages(where=folder):
        name = f"{package}.{sub}"
        if name in ROOTS:
            continue
        packages.append(name)
        package_dir[name] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir, package_data={"avel": ["py.typed"]})
