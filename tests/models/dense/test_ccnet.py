import pytest
import torch

from avel.models.dense.ccnet import MTGC, MtgcConfig
from avel.models.registry import build_model
from avel.models.tdm import TdmConfig


def _ccnet(options_factory, *, T=64, C=4, **over):
    torch.manual_seed(0)
    options = options_factory(T=T, C=C)
    options.update(over)
    return build_model("ccnet", options=options)


@pytest.mark.parametrize("T", [64, 96, 256])
def test_forward_any_sequence_length_with_masks(options_factory, batch_factory, T):
    model = _ccnet(options_factory, T=T).eval()
    batch = batch_factory(T=T, lengths=[T, T // 2 + 3])
    with torch.no_grad():
        out = model(batch)
    assert [x.shape[1] for x in out["cls_logits"]] == [T // 2**l for l in range(6)]
    assert all(torch.isfinite(x).all() for x in out["cls_logits"])
    with torch.no_grad():  # shorter input is padded to max_seq_len
        short = model(batch_factory(B=1, T=T - 10))
    assert short["cls_logits"][0].shape[1] == T


def test_padding_does_not_change_valid_outputs(options_factory, batch_factory):
    model = _ccnet(options_factory).eval()
    batch = batch_factory(lengths=[64, 41])
    with torch.no_grad():
        both = model(batch)
        alone = model({k: v[1:] for k, v in batch.items()})
    for lb, la, m in zip(both["cls_logits"], alone["cls_logits"], alone["masks"]):
        assert torch.allclose(lb[1][m[0]], la[0][m[0]], atol=1e-5)


def test_losses_backward_and_predict(options_factory, batch_factory):
    model = _ccnet(options_factory).train()
    batch = batch_factory(lengths=[64, 50])
    losses = model.losses(model(batch), batch)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        preds = model.predict(model(batch), batch)
    assert len(preds) == 2 and all(len(p) <= 100 for p in preds)
    assert all(0 <= s <= e <= float(batch["durations_s"][i]) + 1e-6 for i, p in enumerate(preds) for s, e, _, _ in p)


ABLATIONS = [
    {"mtgc": {"c2f": False, "f2c": False}},  # table 2: CMCC only
    {"mtgc": {"c2f": True, "f2c": False}},
    {"mtgc": {"c2f": False, "f2c": True}},
    {"pyramid": {"num_heads": 4, "temporal_consistency_gate": False}},  # table 3: CMI only
    {"pyramid": {"num_heads": 4, "cross_modal_interaction": False}},  # table 3: TCG only
    {"mtgc": {"order": "f2c_c2f"}},  # table 4
    {"mtgc": {"channel_attention": False}, "loss": {"reg_loss": "giou"}},
]


@pytest.mark.parametrize("over", ABLATIONS)
def test_ablation_switches_change_the_model(options_factory, batch_factory, over):
    full = _ccnet(options_factory, T=32).eval()
    model = _ccnet(options_factory, T=32, **over).train()
    batch = batch_factory(T=32, lengths=[32, 20])
    loss = model.losses(model(batch), batch)["total"]
    assert torch.isfinite(loss)
    if "loss" in over:
        return
    n_full = sum(p.numel() for p in full.parameters())
    n_model = sum(p.numel() for p in model.parameters())
    if n_model == n_full:  # same modules, different wiring: same weights must give different outputs
        with torch.no_grad():  # LayerScale starts at 1e-4; open the residual branches so wiring shows
            for name, p in full.named_parameters():
                if "drop_path" in name:
                    p.fill_(1.0)
        model.load_state_dict(full.state_dict())
        model.eval()
        with torch.no_grad():
            assert not torch.allclose(model(batch)["cls_logits"][0], full(batch)["cls_logits"][0])
    else:
        assert n_model < n_full


def test_mtgc_order_changes_the_output():
    torch.manual_seed(0)
    lengths = [16, 8, 4]
    feats = [torch.randn(1, 8, n) for n in lengths]
    masks = [torch.ones(1, 1, n, dtype=torch.bool) for n in lengths]
    kw = dict(dim=8, num_classes=2, level_lengths=lengths)
    a = MTGC(**kw, cfg=MtgcConfig(c2f_num_heads=2, path_pdrop=0.0), tdm_cfg=TdmConfig(class_dim=4)).eval()
    b = MTGC(
        **kw, cfg=MtgcConfig(c2f_num_heads=2, order="f2c_c2f", path_pdrop=0.0), tdm_cfg=TdmConfig(class_dim=4)
    ).eval()
    b.load_state_dict(a.state_dict())
    out_a, out_b = a(feats, masks), b(feats, masks)
    assert [x.shape for x in out_a] == [x.shape for x in feats]
    assert not torch.allclose(out_a[0], out_b[0])
    # F2C leaves the finest level alone: with C2F and TDM off the first level passes through
    f2c_only = MTGC(**kw, cfg=MtgcConfig(c2f=False, channel_attention=False, path_pdrop=0.0), tdm_cfg=None).eval()
    out = f2c_only(feats, masks)
    assert torch.equal(out[0], feats[0]) and not torch.allclose(out[1], feats[1])
    with pytest.raises(ValueError, match="level lengths"):
        a([torch.randn(1, 8, n) for n in (32, 16, 8)], [torch.ones(1, 1, n, dtype=torch.bool) for n in (32, 16, 8)])


def test_rejects_inputs_longer_than_max_seq_len(options_factory, batch_factory):
    model = _ccnet(options_factory, T=32).eval()
    with pytest.raises(ValueError, match="max_seq_len=32"):
        model(batch_factory(B=1, T=40))
