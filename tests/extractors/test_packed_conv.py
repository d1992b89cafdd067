"""oneDNN prepacked convolutions (CPU float32 inference): same rows as ``F.conv2d`` /
``F.conv3d`` up to float rounding, the plain path wherever they do not apply, packed weights
that follow the module's weights, and copies / pickles without oneDNN tensors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import avel.extractors as E
from avel.extractors.fusion import PackedConv, PackedConvReLU2d, conv_relu, onednn_packed_available, pack_conv_relu_
from avel.extractors.i3d import Unit3D

pytestmark = pytest.mark.skipif(not onednn_packed_available(), reason="torch built without oneDNN")


def _plain(x, w, b, stride, padding, relu):
    conv = F.conv3d if w.ndim == 5 else F.conv2d
    y = conv(x, w, b, stride, padding)
    return F.relu(y) if relu else y


@pytest.mark.parametrize(
    "shape,kernel,stride,padding,relu,bias",
    [
        ((1, 5, 6, 11, 9), (3, 3, 3), (1, 1, 1), (1, 1, 1), True, True),
        ((2, 5, 7, 10, 12), (7, 7, 7), (2, 2, 2), (0, 0, 0), True, True),
        ((1, 8, 4, 6, 6), (1, 1, 1), (1, 1, 1), (0, 0, 0), False, True),
        ((2, 4, 9, 9), (3, 3), (1, 1), (1, 1), True, False),
        ((1, 3, 16, 15), (3, 3), (2, 2), (0, 0), False, True),
    ],
)
def test_packed_matches_plain_conv(shape, kernel, stride, padding, relu, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(6, shape[1], *kernel, generator=g) * 0.2
    b = torch.randn(6, generator=g) if bias else None
    want = _plain(x, w, b, stride, padding, relu)
    with torch.no_grad():
        got = PackedConv()(x, w, b, stride=stride, padding=padding, relu=relu)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if relu:
            assert (got >= 0).all() and (_plain(x, w, b, stride, padding, False) < 0).any()  # the ReLU mattered
        strided = torch.randn(shape[0], shape[1] * 2, *shape[2:], generator=g)[:, ::2]  # not contiguous
        torch.testing.assert_close(
            PackedConv()(strided, w, b, stride=stride, padding=padding, relu=relu),
            _plain(strided, w, b, stride, padding, relu),
            rtol=1e-5,
            atol=1e-5,
        )


def test_packed_weights_follow_the_weight_and_the_shape():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(4, 3, 3, 3, 3, generator=g), torch.randn(4, generator=g)
    pc = PackedConv(max_shapes=2)
    with torch.no_grad():
        for shape in [(1, 3, 5, 8, 8), (2, 3, 5, 8, 8), (1, 3, 6, 9, 7)]:  # three shapes, two kept
            x = torch.randn(*shape, generator=g)
            torch.testing.assert_close(
                pc(x, w, b, stride=(1, 1, 1), padding=(1, 1, 1), relu=False),
                F.conv3d(x, w, b, padding=1),
                rtol=1e-5,
                atol=1e-5,
            )
        assert len(pc._packed) == 2
        for change in (lambda: w.mul_(-2.0), lambda: setattr(w, "data", w.data * 0.5)):  # in place; .data swapped
            change()  # packed again, not the stale weight
            torch.testing.assert_close(
                pc(x, w, b, stride=(1, 1, 1), padding=(1, 1, 1), relu=False),
                F.conv3d(x, w, b, padding=1),
                rtol=1e-5,
                atol=1e-5,
            )


def test_plain_path_where_packing_does_not_apply():
    """Autograd, autocast and float64 take ``F.conv3d`` itself (bitwise), as does no packer."""
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(4, 3, 3, 3, 3, generator=g), torch.randn(4, generator=g)
    x = torch.randn(1, 3, 5, 6, 6, generator=g)
    want = F.relu(F.conv3d(x, w, b, padding=1))
    kw = {"stride": (1, 1, 1), "padding": (1, 1, 1), "relu": True}
    assert PackedConv.applies(x, w) is False  # grad mode is on here
    assert torch.equal(conv_relu(x, w, b, packed=PackedConv(), **kw), want)
    with torch.no_grad():
        assert PackedConv.applies(x, w)
        assert torch.equal(conv_relu(x, w, b, packed=None, **kw), want)
        assert not PackedConv.applies(x.double(), w.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not PackedConv.applies(x, w)


def test_fused_i3d_packs_and_copies_without_onednn_tensors(make_frames):
    """``fuse_for_inference`` packs every unit; a deep copy and a pickle of the used module carry
    no packed weights and give the same rows."""
    model = E.get("i3d_rgb").random_init(preset="tiny", seed=3).fuse_for_inference()
    units = [m for m in model.rgb.modules() if isinstance(m, Unit3D)]
    assert units and all(u.packed is not None for u in units)
    c = model.config
    windows = make_frames(c.window_frames, c.crop_size, c.crop_size, seed=5)[None]
    rows = model.extract(windows)
    assert any(u.packed._packed for u in units)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not any(u.packed._packed for u in clone.rgb.modules() if isinstance(u, Unit3D))
        assert torch.equal(clone.extract(windows), rows)


def test_pack_conv_relu_keeps_keys_and_rows():
    """Conv2d + ReLU pairs become one packed module, the ReLU's slot an Identity: the same
    state-dict keys and tensors, rows within float rounding; a conv without a ReLU after it
    keeps its output sign, one with string padding is left as it is."""
    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 4, 3, padding=1, stride=2),
        torch.nn.Conv2d(4, 4, 3, padding="same"),
    ).eval()
    x = torch.randn(2, 3, 16, 12)
    with torch.no_grad():
        want = seq(x)
    keys = {k: v for k, v in seq.state_dict().items()}
    assert pack_conv_relu_(seq) == 2
    assert isinstance(seq[0], PackedConvReLU2d) and seq[0].relu
    assert isinstance(seq[1], torch.nn.Identity)
    assert isinstance(seq[3], PackedConvReLU2d) and not seq[3].relu
    assert type(seq[4]) is torch.nn.Conv2d
    state = seq.state_dict()
    assert list(state) == list(keys) and all(state[k] is keys[k] or torch.equal(state[k], keys[k]) for k in keys)
    assert seq[0].weight.data_ptr() == keys["0.weight"].data_ptr()  # shared, not copied
    with torch.no_grad():
        got = seq(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (want < 0).any()  # the last convs have no ReLU: signs survive


@pytest.mark.parametrize("name", ["vgg19", "vggish"])
def test_fused_vgg_rows_match_the_unfused_ones(name):
    """``fuse_for_inference`` packs every convolution of VGG-19 / VGGish (tiny presets): rows
    within float rounding of the unfused module, the same state dict."""
    cls = E.get(name)
    plain = cls.random_init(preset="tiny", seed=3)
    fused = cls.random_init(preset="tiny", seed=3).fuse_for_inference()
    convs = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, PackedConvReLU2d) for m in convs)
    assert plain.state_dict().keys() == fused.state_dict().keys()
    g = torch.Generator().manual_seed(0)
    if name == "vgg19":
        s = plain.config.image_size
        windows = torch.randint(0, 256, (2, plain.config.window_frames, s, s, 3), dtype=torch.uint8, generator=g)
    else:
        windows = torch.randn(3, plain.plan.window_units + plain.context_samples, generator=g) * 0.1
    want, got = plain.extract(windows), fused.extract(windows)
    assert want.abs().mean() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
