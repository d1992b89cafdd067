"""Parameter and FLOP counts of registered models (``avel models info``).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one eval-mode forward pass
(batch 1, all rows valid). It counts matrix multiplications and convolutions only, 2 FLOPs
per multiply-accumulate (MAC). We report:

- ``gmacs``: all MACs (layers + attention products ``q k^T`` and ``att v``);
- ``gmacs_layers``: MACs of convolution and Linear layers only, i.e. what module-hook
  counters (thop-style) see. LoCo table 3's "GFLOPs" are this number: UnAV at ONE-PEACE dims,
  T=256, C=100 gives exactly 60.28 here, while adding the attention products gives 64.26;
- ``gflops``: 2 x ``gmacs``, the strict FLOP count.

FlopCounterMode has no formula for recurrent layers; LSTM / GRU gate products (per step, layer
and direction ``gates x hidden x (input + hidden)``) are added from forward hooks and count as
layers. ``gmacs_by_module`` splits both figures by top-level child module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avel.models.registry import config_from_dict, probe_inputs, resolve

# aten ops of convolution / Linear layers (the rest, bmm / sdpa, are attention products)
_LAYER_OPS = {"convolution", "mm", "addmm", "_convolution", "conv1d", "conv2d"}


def _rnn_hook(acc: dict[str, int], child: str):
    """Forward hook adding an LSTM / GRU's gate MACs to ``acc[child]``: per step, layer and
    direction ``gates x hidden x (input + hidden)`` (4 gates LSTM, 3 GRU); element-wise ops not counted."""

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        assert isinstance(module, (nn.LSTM, nn.GRU))
        x = args[0]
        if isinstance(x, nn.utils.rnn.PackedSequence):
            steps = int(x.data.shape[0])  # sum of valid lengths over the batch
        else:
            steps = int(x.shape[0] * x.shape[1])  # B x T (or T x B)
        gates = 4 if isinstance(module, nn.LSTM) else 3
        dirs = 2 if module.bidirectional else 1
        h, num_layers, input_size = int(module.hidden_size), int(module.num_layers), int(module.input_size)
        per_step = 0
        for layer in range(num_layers):
            in_dim = input_size if layer == 0 else h * dirs
            per_step += dirs * gates * h * (in_dim + h)
        acc[child] = acc.get(child, 0) + steps * per_step

    return hook


def model_info(
    name: str,
    *,
    input_dims: tuple[int, int] | None = None,
    seq_len: int | None = None,
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
    count_flops: bool = True,
) -> dict[str, Any]:
    """Parameters (total, trainable, per top-level module) and FLOPs of model ``name``.

    Args:
        name: registry name.
        input_dims: (visual_dim, audio_dim), set on configs that have these fields.
        seq_len: T: ``max_seq_len`` (dense) or ``num_segments`` (AVE) of the model where the config
            has the field, and the length of the probe input.
        num_classes: C, set when the config has ``num_classes``.
        options: further config fields (nested dict).
        count_flops: run the probe forward pass (needs the model's ``example_batch``).

    ``None`` takes the model's defaults (:func:`avel.models.registry.probe_inputs`): ONE-PEACE
    1536 / 1536, T 256, C 100 for the dense models; VGG-19 pool5 7 x 7 x 512, VGGish 128, T 10,
    C 29 for the AVE models.
    """
    defaults = probe_inputs(name)
    dims: tuple[int, int] = (
        (int(input_dims[0]), int(input_dims[1])) if input_dims is not None else defaults["input_dims"]
    )
    seq_len = seq_len if seq_len is not None else defaults["seq_len"]
    num_classes = num_classes if num_classes is not None else defaults["num_classes"]
    cfg_cls, model_cls = resolve(name)
    field_names = {f.name for f in dataclasses.fields(cfg_cls)}
    data = {
        "visual_dim": dims[0],
        "audio_dim": dims[1],
        "num_classes": num_classes,
        "max_seq_len": seq_len,
        "num_segments": seq_len,
    }
    merged = {k: v for k, v in data.items() if k in field_names}
    merged.update(options or {})
    model = model_cls(config_from_dict(cfg_cls, merged, path=f"model[{name}].options")).eval()
    params = sum(p.numel() for p in model.parameters())
    info: dict[str, Any] = {
        "model": name,
        "input_dims": list(dims),
        "seq_len": seq_len,
        "num_classes": num_classes,
        "params": params,
        "params_m": params / 1e6,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params_by_module": {n: sum(p.numel() for p in c.parameters()) for n, c in model.named_children()},
    }
    regions = getattr(model.config if hasattr(model, "config") else None, "num_regions", None)
    if regions is not None:
        info["visual_regions"] = regions
    if count_flops:
        example_batch = getattr(model, "example_batch", None)
        if not callable(example_batch):
            raise TypeError(f"model {name!r} has no example_batch(); cannot count FLOPs")
        batch = example_batch(batch_size=1, seq_len=seq_len)
        counter = FlopCounterMode(display=False)
        rnn_macs: dict[str, int] = {}  # top-level child -> recurrent-layer MACs (FlopCounterMode skips RNNs)
        hooks = [
            m.register_forward_hook(_rnn_hook(rnn_macs, path.split(".")[0]))
            for path, m in model.named_modules()
            if isinstance(m, (nn.LSTM, nn.GRU))
        ]
        try:
            with torch.no_grad(), counter:
                model(batch)
        finally:
            for h in hooks:
                h.remove()
        rnn_flops = 2 * sum(rnn_macs.values())
        flops = counter.get_total_flops() + rnn_flops
        by_op = {str(k): v for k, v in counter.get_flop_counts().get("Global", {}).items()}
        if rnn_flops:
            by_op["recurrent (LSTM/GRU gates)"] = rnn_flops
        layer_flops = sum(v for k, v in by_op.items() if k.split(".")[-1] in _LAYER_OPS) + rnn_flops
        by_module = {}  # top-level child name -> (all MACs, conv + Linear + recurrent MACs)
        for key, ops in counter.get_flop_counts().items():
            parts = key.split(".")
            if len(parts) == 2:
                layer = sum(v for k, v in ops.items() if str(k).split(".")[-1] in _LAYER_OPS)
                by_module[parts[1]] = {"gmacs": sum(ops.values()) / 2e9, "gmacs_layers": layer / 2e9}
        for child, macs in rnn_macs.items():
            entry = by_module.setdefault(child, {"gmacs": 0.0, "gmacs_layers": 0.0})
            entry["gmacs"] += macs / 1e9
            entry["gmacs_layers"] += macs / 1e9
        info.update(
            {
                "flops": flops,
                "gflops": flops / 1e9,
                "gmacs": flops / 2e9,
                "gmacs_layers": layer_flops / 2e9,
                "gmacs_by_op": {k: v / 2e9 for k, v in by_op.items()},
                "gmacs_by_module": by_module,
            }
        )
    return info


def format_info(info: dict[str, Any]) -> str:
    """Human-readable report."""
    grid = ""
    if "visual_regions" in info:
        side = int(round(info["visual_regions"] ** 0.5))
        grid = f" (visual {side} x {side} x {info['input_dims'][0]})" if side * side == info["visual_regions"] else ""
    lines = [
        f"model       {info['model']}",
        f"inputs      dims {info['input_dims']}{grid}, seq_len {info['seq_len']}, classes {info['num_classes']}",
        f"parameters  {info['params']:,} ({info['params_m']:.2f} M), trainable {info['trainable_params']:,}",
    ]
    by_module = info.get("gmacs_by_module", {})
    nd = 2 if info.get("gmacs", 1.0) >= 1 else 4
    if by_module:
        lines.append(f"  {'':<22}{'params':>12}{'GMACs':>9}{'(layers)':>10}")
    for n, c in info["params_by_module"].items():
        macs = by_module.get(n)
        if c or macs:
            cost = f"{macs['gmacs']:9.{nd}f}{macs['gmacs_layers']:10.{nd}f}" if macs else ""
            lines.append(f"  {n:<22}{c / 1e6:10.2f} M{cost}")
    if "flops" in info:
        nd = 2 if info["gmacs"] >= 1 else 4
        lines.append(
            f"GMACs       {info['gmacs_layers']:.{nd}f}  conv + Linear (+ recurrent) layers only "
            "(what LoCo table 3 calls GFLOPs)"
        )
        lines.append(f"GMACs       {info['gmacs']:.{nd}f}  all, incl. attention products")
        lines.append(f"GFLOPs      {info['gflops']:.{nd}f}  2 x all MACs")
    return "\n".join(lines)
