"""The one strict dict -> dataclass rule (model options, training config, extraction jobs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from avel.datasets.config_schema import dataclass_from_dict


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


def test_paths_and_parsers():
    with pytest.raises(ValueError, match=r"model\[m\]\.options\.inner\.width: expected an integer"):
        dataclass_from_dict(Outer, {"inner": {"width": "w"}}, path="model[m].options")
    seen = []
    cfg = dataclass_from_dict(
        Outer, {"inner": "wide"}, parsers={Inner: lambda value, path: seen.append(path) or Inner(width=len(value))}
    )
    assert cfg.inner == Inner(width=4) and seen == ["inner"]
