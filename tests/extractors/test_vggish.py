"""VGGish: TF log-mel frontend against numpy, architecture, key layout, postprocessing, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import avel.extractors as E


def numpy_tf_log_mel(wave: np.ndarray, sr: int = 16000) -> np.ndarray:
    """TF VGGish log-mel (mel_features.py formulas), float64 numpy."""
    win, hop, nfft = 400, 160, 512
    n_frames = 1 + (len(wave) - win) // hop
    frames = np.stack([wave[i * hop : i * hop + win] for i in range(n_frames)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi / win * np.arange(win))
    spec = np.abs(np.fft.rfft(frames * hann, nfft))
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    bins_mel = mel(np.linspace(0.0, sr / 2, nfft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), 64 + 2)
    weights = np.zeros((nfft // 2 + 1, 64))
    for i in range(64):
        lo, c, hi = edges[i : i + 3]
        weights[:, i] = np.maximum(0.0, np.minimum((bins_mel - lo) / (c - lo), (hi - bins_mel) / (hi - c)))
    weights[0, :] = 0.0
    return np.log(spec @ weights + 0.01)


def test_frontend_matches_numpy_tf_formulas():
    rng = np.random.RandomState(0)
    wave = (rng.rand(16000 * 2) * 2 - 1) * 0.3 + 0.2 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    ext = E.get("vggish").build(hop_s=0.32)
    win = ext.windows(torch.tensor(wave, dtype=torch.float32))
    examples = ext.preprocess(win.data)[:, 0].double().numpy()  # N x 96 x 64
    ref = numpy_tf_log_mel(wave)
    assert examples.shape == (len(win.bounds), 96, 64)
    for i, (start, _) in enumerate(win.bounds):
        frame0 = start // 160
        np.testing.assert_allclose(examples[i], ref[frame0 : frame0 + 96], atol=1e-4, rtol=0)
    # TF framing: log-mel frames of the whole clip, examples every 32 frames; counts agree here
    assert len(win.bounds) == 1 + (len(ref) - 96) // 32


def _official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    convs = [(0, 1, 64), (3, 64, 128), (6, 128, 256), (8, 256, 256), (11, 256, 512), (13, 512, 512)]
    for idx, cin, cout in convs:
        shapes[f"features.{idx}.weight"] = (cout, cin, 3, 3)
        shapes[f"features.{idx}.bias"] = (cout,)
    for idx, fin, fout in [(0, 512 * 6 * 4, 4096), (2, 4096, 4096), (4, 4096, 128)]:
        shapes[f"embeddings.{idx}.weight"] = (fout, fin)
        shapes[f"embeddings.{idx}.bias"] = (fout,)
    return shapes


def test_full_model_size_and_torchvggish_layout(tmp_path):
    shapes = _official_shapes()
    m = E.get("vggish").build(device="meta")
    assert {k[len("net.") :]: tuple(v.shape) for k, v in m.state_dict().items()} == shapes
    assert sum(p.numel() for p in m.parameters()) == sum(int(np.prod(s)) for s in shapes.values())
    # stride-0 views keep the file tiny; one real tensor checks the values arrive
    state = {k: torch.full((1,), 0.5).expand(s) for k, s in shapes.items()}
    state["embeddings.4.weight"] = torch.randn(shapes["embeddings.4.weight"])
    torch.save(state, tmp_path / "vggish-10086976.pth")
    loaded = E.get("vggish").from_checkpoint(tmp_path / "vggish-10086976.pth")
    assert torch.equal(loaded.net.embeddings[4].weight, state["embeddings.4.weight"])
    assert loaded.feature_shape == (128,)


def test_postprocess_pca_quantisation(tmp_path):
    cls = E.get("vggish")
    src = cls.random_init(preset="tiny")
    torch.save({k[len("net.") :]: v for k, v in src.state_dict().items()}, tmp_path / "vggish-10086976.pth")
    g = torch.Generator().manual_seed(1)
    pca = {"pca_eigen_vectors": torch.randn(16, 16, generator=g), "pca_means": torch.randn(16, generator=g)}
    torch.save(pca, tmp_path / "vggish_pca_params-970ea276.pth")
    m = cls.from_checkpoint(tmp_path, preset="tiny", postprocess=True)
    x = torch.randn(3, 1, 96, 64, generator=g)
    raw = src.net(x)
    expected = pca["pca_eigen_vectors"] @ (raw.T - pca["pca_means"][:, None])
    expected = torch.round((expected.T.clamp(-2, 2) + 2) * 63.75)
    torch.testing.assert_close(m(x), expected)
    assert m(x).min() >= 0 and m(x).max() <= 255
    assert m.weights_sha256.startswith("model=") and ";pca=" in m.weights_sha256


def test_random_postprocess_preset_has_an_identity_pca_not_uninitialised_memory():
    """Random weights with ``postprocess``: the PCA is the identity (it was ``torch.empty``:
    whatever the allocator returned, NaN included), so the rows are the quantised raw embedding."""
    m = E.get("vggish").random_init(preset="tiny", seed=2, postprocess=True)
    assert torch.equal(m.pca_eigen_vectors, torch.eye(16)) and torch.equal(m.pca_means, torch.zeros(16, 1))
    x = torch.randn(3, 1, 96, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(m(x), torch.round((m.net(x).clamp(-2, 2) + 2) * 63.75))


def test_final_relu_is_on_by_default_and_a_config_field():
    x = torch.randn(2, 1, 96, 64)
    a = E.get("vggish").random_init(preset="tiny", seed=4)
    b = E.get("vggish").random_init(preset="tiny", seed=4, final_relu=False)
    assert a.config.final_relu and E.get("vggish").make_config().final_relu
    torch.testing.assert_close(a(x), b(x).clamp(min=0))
    assert (b(x) < 0).any() and (a(x) >= 0).all()


AVE_VGGISH_H5 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ave" / "audio_feature_noisy.h5"


@pytest.mark.skipif(not AVE_VGGISH_H5.is_file(), reason="real AVE features (../shared) not present")
def test_released_ave_vggish_features_are_post_relu():
    """Why ``final_relu`` defaults to True: the released AVE VGGish rows have no negative value and
    many exact zeros, which only a ReLU on the embedding produces."""
    import h5py

    with h5py.File(AVE_VGGISH_H5, "r") as f:
        feats = f["avadataset"][()]  # videos x 10 x 128
    assert feats.shape[1:] == (10, 128)
    assert (feats < 0).sum() == 0
    assert (feats == 0).mean() > 0.5


@pytest.mark.parametrize(
    "hop_s,n_samples,rows,padded",
    [
        (0.96, 16000 * 3, 3, False),  # TF default: 0, 0.96, 1.92
        (0.32, 16000 * 2, 4, False),  # UnAV-100: 0, 0.32, 0.64, 0.96 (1 + (32000 - 15360) // 5120)
        (1.0, 16000 * 10, 10, False),  # AVE: one example per 1-s segment
        (0.32, 8000, 1, True),  # shorter than one example: one zero-padded row
    ],
)
def test_window_timing(hop_s, n_samples, rows, padded):
    ext = E.get("vggish").random_init(preset="tiny", hop_s=hop_s)
    w = ext.windows(torch.zeros(n_samples))
    assert w.num_rows == rows and w.padded == padded
    start, end = ext.plan.row_times(w.num_rows)
    np.testing.assert_allclose(start, np.arange(rows) * hop_s, atol=1e-9)
    np.testing.assert_allclose(end - start, 0.96)
    assert w.data.shape == (rows, 15600)
    assert ext.extract(w.data).shape == (rows, 16)


def test_bad_input_is_rejected():
    ext = E.get("vggish").random_init(preset="tiny")
    with pytest.raises(ValueError, match="15600"):
        ext.preprocess(torch.zeros(2, 15360))
    with pytest.raises(ValueError, match="window_s"):
        E.get("vggish").build(device="meta", window_s=1.0)
