import json
import subprocess
import sys

import pytest

import avel.models as M


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nimport sys, json\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('avel.models.'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_registry_loads_no_model_module():
    loaded = _loaded_after("import avel.models.registry")
    assert loaded == ["avel.models.registry"], loaded


def test_a_name_loads_its_own_module_only():
    loaded = _loaded_after("from avel.models import UnavConfig")
    assert "avel.models.dense.unav" in loaded and "avel.models.dense.ccnet" not in loaded, loaded


def test_every_exported_name_resolves():
    assert sorted(M.__all__) == sorted(M._EXPORTS)
    for name in M.__all__:
        assert getattr(M, name).__name__ == name
    assert set(M.__all__) <= set(dir(M))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchModel'"):
        M.NoSuchModel  # noqa: B018
