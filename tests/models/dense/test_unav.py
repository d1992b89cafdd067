import pytest
import torch

from avel.models.registry import build_model


def _model(options_factory, **kw):
    torch.manual_seed(0)
    return build_model("unav", options=options_factory(**kw))


def test_forward_shapes_losses_backward(options_factory, batch_factory):
    model = _model(options_factory).train()
    batch = batch_factory(lengths=[64, 40])
    out = model(batch)
    assert [x.shape for x in out["cls_logits"]] == [(2, 64 // s, 4) for s in (1, 2, 4, 8, 16, 32)]
    assert [x.shape for x in out["offsets"]] == [(2, 64 // s, 4, 2) for s in (1, 2, 4, 8, 16, 32)]
    assert all(torch.all(x >= 0) for x in out["offsets"])
    assert out["masks"][0][1].sum() == 40 and out["masks"][1][1].sum() == 20
    losses = model.losses(out, batch)
    assert {"total", "cls", "reg"} <= set(losses)
    assert torch.isfinite(losses["total"]) and losses["reg"] > 0
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # the EMA of positives moved away from its 250 init in train mode only
    norm = float(model.loss_normalizer.value)
    assert norm < 250
    model.eval()
    model.losses(model(batch), batch)
    assert float(model.loss_normalizer.value) == norm


def test_padding_does_not_change_valid_outputs(options_factory, batch_factory):
    """A padded sample in a batch gives the same outputs as alone (TDM masks per sample)."""
    model = _model(options_factory).eval()
    batch = batch_factory(lengths=[64, 37])
    with torch.no_grad():
        both = model(batch)
        alone = model({k: (v[1:] if torch.is_tensor(v) else v[1:]) for k, v in batch.items()})
    for lb, la, m in zip(both["cls_logits"], alone["cls_logits"], alone["masks"]):
        assert torch.allclose(lb[1][m[0]], la[0][m[0]], atol=1e-5)


def test_predict_format_in_seconds(options_factory, batch_factory):
    model = _model(options_factory).eval()
    batch = batch_factory(lengths=[64, 40])
    with torch.no_grad():
        preds = model.predict(model(batch), batch)
    assert len(preds) == 2
    for dets, dur in zip(preds, batch["durations_s"].tolist()):
        assert 0 < len(dets) <= 100
        scores = [d[3] for d in dets]
        assert scores == sorted(scores, reverse=True)
        for start_s, end_s, label, score in dets:
            assert isinstance(label, int) and 0 <= label < 4
            assert 0.0 <= start_s <= end_s <= dur + 1e-6
            assert 0.0 < score <= 1.0


def test_long_inputs_in_eval_only(options_factory, batch_factory):
    model = _model(options_factory)
    batch = batch_factory(B=1, T=80)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out["cls_logits"][0].shape[1] == 96  # padded to a multiple of the largest stride
    model.train()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(batch)


def test_bad_batches_are_named(options_factory, batch_factory):
    model = _model(options_factory)
    batch = batch_factory()
    with pytest.raises(KeyError, match="audio"):
        model({k: v for k, v in batch.items() if k != "audio"})
    bad = dict(batch, visual=torch.randn(2, 64, 7))
    with pytest.raises(ValueError, match="visual.*7.*12"):
        model(bad)


def test_overfits_one_batch(options_factory, batch_factory):
    options = options_factory(T=32)
    options["loss"] = {"loss_norm_momentum": 1.0}  # frozen normaliser: losses comparable across steps
    torch.manual_seed(0)
    model = build_model("unav", options=options).train()
    batch = batch_factory(T=32, lengths=[32, 30])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        loss = model.losses(model(batch), batch)["total"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_subclass_hooks_extras_and_extra_losses(options_factory, batch_factory):
    """The DenseDetector skeleton lets a subclass pass extra outputs to an extra loss term."""
    from avel.models.dense.unav import UnavDetector

    class WithAux(UnavDetector):
        def features(self, visual, audio, mask):
            feats, masks = super().features(visual, audio, mask)
            return feats, masks, {"aux": feats[0].mean()}

        def extra_losses(self, outputs, batch):
            return {"aux": outputs["aux"] ** 2}

    torch.manual_seed(0)
    base = _model(options_factory)
    model = WithAux(base.cfg)
    model.load_state_dict(base.state_dict())
    batch = batch_factory()
    model.eval(), base.eval()
    with torch.no_grad():
        la, lb = model.losses(model(batch), batch), base.losses(base(batch), batch)
    assert torch.isclose(la["total"], lb["total"] + la["aux"]) and la["aux"] > 0
