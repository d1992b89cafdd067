"""The one strict dict -> dataclass rule, pydantic-backed (extractor, model, training and job configs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from avel.datasets.config_schema import ConfigValueError, Sources, check_fields, dataclass_from_dict


@dataclass
class Inner:
    width: int
    ratio: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    sizes: list[int] = field(default_factory=list)
    kernel: tuple[int, int] = (3, 3)
    dims: tuple[int, ...] = ()
    inner: Inner = field(default_factory=lambda: Inner(width=1))
    maybe: float | None = None
    either: int | str = 0
    extra: dict[str, Any] = field(default_factory=dict)
    anything: Any = None


def test_values_are_converted_and_checked():
    cfg = dataclass_from_dict(
        Outer,
        {
            "sizes": [1, 2],
            "kernel": [5, 7],
            "dims": [4, 5, 6],
            "inner": {"width": 3, "ratio": 1},
            "maybe": 2,
            "either": "a",
            "extra": {"k": [1]},
            "anything": {1},
        },
    )
    assert cfg.kernel == (5, 7) and cfg.dims == (4, 5, 6) and cfg.sizes == [1, 2]
    assert cfg.inner == Inner(width=3, ratio=1.0) and isinstance(cfg.inner.ratio, float)
    assert cfg.maybe == 2.0 and cfg.either == "a" and cfg.extra == {"k": [1]} and cfg.anything == {1}
    assert dataclass_from_dict(Outer, {"maybe": None}).maybe is None
    inner = Inner(width=9)
    assert dataclass_from_dict(Outer, {"inner": inner}).inner is inner


@pytest.mark.parametrize(
    "data,message",
    [
        ({"nme": "y"}, r"top level: unknown key\(s\) \['nme'\] for Outer; expected some of \["),
        ({"inner": {}}, r"inner: missing required key\(s\) \['width'\] for Inner"),
        ({"inner": {"width": True}}, r"inner\.width: expected an integer, got True"),
        ({"flag": 1}, r"flag: expected true/false, got 1"),
        ({"sizes": [1, "2"]}, r"sizes\[1\]: expected an integer, got '2'"),
        ({"kernel": [1, 2, 3]}, r"kernel: expected 2 items, got 3"),
        ({"kernel": 3}, r"kernel: expected a list, got int 3"),
        ({"maybe": "1e-3"}, r"maybe: expected a number, got '1e-3'"),
        ({"either": 1.5}, r"either: expected an integer, got 1.5"),
        ({"extra": [1]}, r"extra: expected a mapping, got list"),
        ({"inner": 3}, r"inner: expected a mapping for Inner, got int 3"),
    ],
)
def test_errors_name_the_key_path(data, message):
    with pytest.raises(ValueError, match=message):
        dataclass_from_dict(Outer, data)


def test_paths_and_sources():
    with pytest.raises(ValueError, match=r"model\[m\]\.options\.inner\.width: expected an integer"):
        dataclass_from_dict(Outer, {"inner": {"width": "w"}}, path="model[m].options")
    with pytest.raises(ConfigValueError, match=r"^cfg\.yaml: sizes\[0\]: expected an integer, got 1\.5$"):
        dataclass_from_dict(Outer, {"sizes": [1.5]}, source="cfg.yaml")
    with pytest.raises(ValueError, match=r"^--set inner\.ratio: inner\.ratio: expected a number, got 'x'$"):
        dataclass_from_dict(Outer, {"inner": {"width": 1, "ratio": "x"}}, source="--set inner.ratio")
    assert dataclass_from_dict(Outer, None) == Outer()  # an empty file or section: the defaults


@dataclass(frozen=True)
class Checked:
    size: int = 1
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"sise": 2},
            r"^f\.yaml: top level: unknown key\(s\) \['sise'\] for Checked; expected some of \['mode', 'size'\]$",
        ),
        ({"size": "2"}, r"^f\.yaml: size: expected an integer, got '2'$"),
        ({"size": 0}, r"^f\.yaml: size must be >= 1, got 0$"),
        ({"mode": "c"}, r"^f\.yaml: mode: expected 'a' or 'b', got 'c'$"),
        ({"size": "x", "mode": "c"}, r"^f\.yaml: size: expected an integer, got 'x' \(and 1 more problem\(s\)\)$"),
    ],
)
def test_unknown_key_wrong_type_bad_value_name_file_and_key(data, message):
    with pytest.raises(ConfigValueError, match=message):
        dataclass_from_dict(Checked, data, source="f.yaml")


def test_check_fields_allows_missing_but_checks_types():
    check_fields(Inner, {})  # width (required) may be filled in later
    with pytest.raises(ConfigValueError, match=r"^opts: w: unknown key\(s\) \['wdth'\] for Inner"):
        check_fields(Inner, {"wdth": 1}, path="w", source="opts")
    with pytest.raises(ConfigValueError, match=r"w\.ratio: expected a number, got None"):
        check_fields(Inner, {"ratio": None}, path="w")


def test_sources_name_the_cli_option_that_set_a_key():
    src = Sources("run.yaml", {"inner": "--set inner={width: x}", "flag": "--flag"})
    with pytest.raises(
        ConfigValueError, match=r"^--set inner=\{width: x\} \(over run\.yaml\): inner\.width: expected an"
    ):
        dataclass_from_dict(Outer, {"inner": {"width": "x"}}, source=src)
    with pytest.raises(ConfigValueError, match=r"^run\.yaml: sizes\[0\]: expected an integer"):
        dataclass_from_dict(Outer, {"sizes": ["1"], "flag": True}, source=src)
