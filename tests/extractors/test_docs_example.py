"""The worked example of docs/extractors.md (a ResNet-18 frame-wise extractor) works as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import torch

import avel.extractors as E
from avel.extractors import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "extractors.md"


def test_resnet18_worked_example(tmp_path, make_frames, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    source = next(b for b in blocks if "class ResNet18Extractor" in b)
    module = types.ModuleType("avel_doc_resnet18")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look the module up
    exec(compile(source, str(DOC), "exec"), module.__dict__)
    cls = module.ResNet18Extractor
    E.register(cls)
    try:
        assert E.get("resnet18") is cls and "resnet18" in E.list_extractors()
        m = cls.random_init(preset="tiny")
        w = m.windows(make_frames(5, 32, 32))
        assert w.num_rows == 2 and m.extract(w.data).shape == (2, 512)
        assert m.feature_shape == (512,)  # traced: the class declares none
        # a torchvision-layout checkpoint (with fc.*) loads through from_checkpoint
        from torchvision.models import resnet18

        state = resnet18(weights=None).state_dict()
        torch.save(state, tmp_path / "resnet18-f37072fd.pth")
        loaded = cls.from_checkpoint(tmp_path / "resnet18-f37072fd.pth", preset="tiny")
        assert torch.equal(loaded.backbone.conv1.weight, state["conv1.weight"])
    finally:
        registry._RUNTIME.pop("resnet18", None)
