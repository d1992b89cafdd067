"""Parameter and FLOP counts of registered models (``avel models info``).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one eval-mode forward pass
(batch 1, all rows valid). It counts matrix multiplications and convolutions only, 2 FLOPs
per multiply-accumulate (MAC). We report:

- ``gmacs``: all MACs (layers + attention products ``q k^T`` and ``att v``);
- ``gmacs_layers``: MACs of convolution and Linear layers only, i.e. what module-hook
  counters (thop-style) see. LoCo table 3's "GFLOPs" are this number: UnAV at ONE-PEACE dims,
  T=256, C=100 gives exactly 60.28 here, while adding the attention products gives 64.26;
- ``gflops``: 2 x ``gmacs``, the strict FLOP count.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from avel.models.registry import config_from_dict, resolve


# aten ops of convolution / Linear layers (the rest, bmm / sdpa, are attention products)
_LAYER_OPS = {"convolution", "mm", "addmm", "_convolution", "conv1d", "conv2d"}


def model_info(name: str, *, input_dims: tuple[int, int] = (1536, 1536), seq_len: int = 256,
               num_classes: int = 100, options: dict[str, Any] | None = None, count_flops: bool = True
               ) -> dict[str, Any]:
    """Parameters (total, trainable, per top-level module) and FLOPs of model ``name``.

    Args:
        name: registry name.
        input_dims: (visual_dim, audio_dim), set on configs that have these fields.
        seq_len: ``max_seq_len`` of the model and the length of the probe input.
        num_classes: C, set when the config has ``num_classes``.
        options: further config fields (nested dict).
        count_flops: run the probe forward pass (needs the model's ``example_batch``).
    """
    cfg_cls, model_cls = resolve(name)
    field_names = {f.name for f in dataclasses.fields(cfg_cls)}
    data = {"visual_dim": input_dims[0], "audio_dim": input_dims[1], "num_classes": num_classes,
            "max_seq_len": seq_len}
    merged = {k: v for k, v in data.items() if k in field_names}
    merged.update(options or {})
    model = model_cls(config_from_dict(cfg_cls, merged, path=f"model[{name}].options")).eval()
    params = sum(p.numel() for p in model.parameters())
    info: dict[str, Any] = {
        "model": name, "input_dims": list(input_dims), "seq_len": seq_len, "num_classes": num_classes,
        "params": params, "params_m": params / 1e6,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params_by_module": {n: sum(p.numel() for p in c.parameters()) for n, c in model.named_children()},
    }
    if count_flops:
        example_batch = getattr(model, "example_batch", None)
        if not callable(example_batch):
            raise TypeError(f"model {name!r} has no example_batch(); cannot count FLOPs")
        batch = example_batch(batch_size=1, seq_len=seq_len)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(batch)
        flops = counter.get_total_flops()
        by_op = {str(k): v for k, v in counter.get_flop_counts().get("Global", {}).items()}
        layer_flops = sum(v for k, v in by_op.items() if k.split(".")[-1] in _LAYER_OPS)
        info.update({"flops": flops, "gflops": flops / 1e9, "gmacs": flops / 2e9,
                     "gmacs_layers": layer_flops / 2e9, "gmacs_by_op": {k: v / 2e9 for k, v in by_op.items()}})
    return info


def format_info(info: dict[str, Any]) -> str:
    """Human-readable report."""
    lines = [f"model       {info['model']}",
             f"inputs      dims {info['input_dims']}, seq_len {info['seq_len']}, classes {info['num_classes']}",
             f"parameters  {info['params']:,} ({info['params_m']:.2f} M), trainable {info['trainable_params']:,}"]
    for n, c in info["params_by_module"].items():
        if c:
            lines.append(f"  {n:<22}{c / 1e6:10.2f} M")
    if "flops" in info:
        lines.append(f"GMACs       {info['gmacs_layers']:.2f}  conv + Linear layers only "
                     "(what LoCo table 3 calls GFLOPs)")
        lines.append(f"GMACs       {info['gmacs']:.2f}  all, incl. attention products")
        lines.append(f"GFLOPs      {info['gflops']:.2f}  2 x all MACs")
    return "\n".join(lines)
