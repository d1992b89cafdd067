"""LoCo detector: forward / losses / backward at a tiny width, ablation switches, registry, predict."""

import pytest
import torch

from avel.models.dense.loco import LocoConfig, LocoDetector
from avel.models.registry import build_model, config_from_dict

torch.set_num_threads(1)

RANGES = [[0, 4], [4, 8], [8, 10000]]


def tiny_options(T: int, **over) -> dict:
    opts = {
        "visual_dim": 12,
        "audio_dim": 10,
        "num_classes": 5,
        "max_seq_len": T,
        "encoder": {"embed_dim": 16, "num_heads": 2, "num_self_attn": 1},
        "cdp": {"num_levels": 3, "num_heads": 2, "window_size": 4},
        "decoder": {"num_blocks": 1, "num_heads": 2},
        "head": {"head_dim": 16},
        "assigner": {"regression_ranges": RANGES},
    }
    for key, value in over.items():
        opts[key] = {**opts[key], **value} if isinstance(value, dict) and key in opts else value
    return opts


def tiny_model(T: int, **over) -> LocoDetector:
    torch.manual_seed(0)
    return LocoDetector(config_from_dict(LocoConfig, tiny_options(T, **over)))


def make_batch(T: int, lengths: list[int], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    segs = [torch.tensor([[1.0, 0.3 * n], [0.5 * n, n - 1.0]]) for n in lengths]
    labels = [torch.tensor([i % 5, (i + 2) % 5]) for i in range(B)]
    return {
        "sample_ids": [f"s{i}" for i in range(B)],
        "video_ids": [f"v{i}" for i in range(B)],
        "visual": torch.randn(B, T, 12, generator=g) * mask[..., None],
        "audio": torch.randn(B, T, 10, generator=g) * mask[..., None],
        "mask": mask,
        "segments": segs,
        "labels": labels,
        "durations_s": torch.tensor([n * 0.25 + 0.75 for n in lengths]),
        "step_s": torch.full((B,), 0.25),
        "window_s": torch.full((B,), 1.0),
    }


@pytest.mark.parametrize("T,lengths", [(16, [16, 11]), (40, [40, 27])])
def test_forward_losses_backward(T, lengths):
    model = tiny_model(T).train()
    batch = make_batch(T, lengths)
    out = model(batch)
    assert [x.shape[1] for x in out["cls_logits"]] == [T, T // 2, T // 4]
    assert out["offsets"][0].shape == (2, T, 5, 2)
    assert out["lcc_visual"].shape == (2, T, 8)  # D / 2
    losses = model.losses(out, batch)
    assert set(losses) == {"cls", "reg", "lcc", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["lcc"].detach()) > 0
    torch.testing.assert_close(losses["total"], losses["cls"] + losses["reg"] + losses["lcc"])
    unweighted = model.lcc.loss(out["lcc_visual"], out["lcc_audio"], batch["mask"])
    torch.testing.assert_close(losses["lcc"], 0.1 * unweighted)  # alpha = 0.1
    losses["total"].backward()
    assert model.lcc.log_sigma.grad is not None and model.lcc.log_sigma.grad.abs() > 0
    assert model.lcc.temperature.grad.abs() > 0
    wa = model.pyramid.visual_blocks[1].attn.window_adapt.conv.weight
    assert wa.grad is not None and wa.grad.abs().sum() > 0
    assert model.visual_encoder.convs[0].conv.weight.grad.abs().sum() > 0


def test_padding_does_not_change_valid_outputs():
    model = tiny_model(16).eval()
    batch = make_batch(16, [16, 11])
    out = model(batch)
    batch2 = {**batch, "visual": batch["visual"].clone()}
    batch2["visual"][1, 11:] = 9.0  # garbage in padded rows (the model zeroes them)
    out2 = model(batch2)
    torch.testing.assert_close(out2["cls_logits"][0][1, :11], out["cls_logits"][0][1, :11])
    torch.testing.assert_close(model.losses(out2, batch)["lcc"], model.losses(out, batch)["lcc"])


def test_predict_in_seconds_and_longer_eval_sequence():
    model = tiny_model(16).eval()
    batch = make_batch(20, [20, 13])  # longer than max_seq_len: padded to a multiple of the largest stride
    with torch.no_grad():
        out = model(batch)
    assert out["cls_logits"][0].shape[1] == 20
    preds = model.predict(out, batch)
    assert len(preds) == 2
    for dets, dur in zip(preds, batch["durations_s"].tolist()):
        assert dets
        for start, end, label, score in dets:
            assert 0.0 <= start <= end <= dur + 1e-6 and 0 <= label < 5 and 0.0 < score <= 1.0
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model.train()(batch)


@pytest.mark.parametrize(
    "over,checks",
    [
        ({"use_lcc": False}, {"lcc": False, "pyramid_params": True}),  # table 2a: CDP only
        ({"cdp": {"mode": "none"}}, {"lcc": True, "pyramid_params": False}),  # LCC only
        ({"use_lcc": False, "cdp": {"mode": "none"}}, {"lcc": False, "pyramid_params": False}),  # baseline
        (
            {
                "use_lcc": False,
                "cdp": {"mode": "none", "num_levels": 1},
                "assigner": {"regression_ranges": [[0, 10000]]},
            },
            {"lcc": False, "pyramid_params": False},
        ),  # table 3 "base": one full-resolution level
        ({"cdp": {"mode": "global"}}, {"lcc": True, "pyramid_params": True}),  # table 2c / 2d "Full"
        ({"cdp": {"mode": "fixed", "window_size": 8}}, {"lcc": True, "pyramid_params": True}),
        ({"lcc": {"target": "diagonal"}}, {"lcc": True, "pyramid_params": True}),  # table 2b
        ({"lcc": {"target": "softened"}}, {"lcc": True, "pyramid_params": True}),
        ({"lcc": {"target": "fixed_gaussian"}}, {"lcc": True, "pyramid_params": True}),
    ],
)
def test_ablation_switches(over, checks):
    model = build_model("loco", options=tiny_options(16, **over)).train()
    assert (model.lcc is not None) == checks["lcc"]
    assert (sum(p.numel() for p in model.pyramid.parameters()) > 0) == checks["pyramid_params"]
    batch = make_batch(16, [16, 12])
    losses = model.losses(model(batch), batch)
    assert ("lcc" in losses) == checks["lcc"]
    losses["total"].backward()
    assert torch.isfinite(losses["total"])


def test_lcc_and_window_adaptation_parameter_budget():
    """LCC adds two D -> D -> D/2 MLPs (+ tau, sigma); CDP adds one 1x1 conv D -> 2H per block over
    global attention (table 3: +0.78 M and +0.05 M at D 512)."""
    D, H, levels = 16, 2, 3
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    full = count(tiny_model(16))
    no_lcc = count(tiny_model(16, use_lcc=False))
    assert full - no_lcc == 2 * ((D * D + D) + (D * D // 2 + D // 2)) + 2
    global_attn = count(tiny_model(16, use_lcc=False, cdp={"mode": "global"}))
    assert no_lcc - global_attn == 2 * levels * (D * 2 * H + 2 * H)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="cdp.num_levels 6 != 3"):
        tiny_model(16, cdp={"num_levels": 6})
    with pytest.raises(ValueError, match=r"model\[loco\].options.lcc: unknown key"):
        build_model("loco", options=tiny_options(16, lcc={"alpha": 0.1}))
