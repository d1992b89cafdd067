"""ONE-PEACE encoders, checkpoints and extractors (tiny random-weight models on the CPU)."""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from avel.extractors.onepeace import (
    CheckpointError,
    OnePeaceAudioExtractor,
    OnePeaceImageExtractor,
    OnePeaceVideoK400Extractor,
    load_checkpoint_file,
    load_onepeace,
    load_onepeace_video,
    normalize_waveform,
    preprocess_images,
    preprocess_video_k400,
)
from avel.extractors.onepeace_model import (
    AUDIO_FEATURE_SPEC,
    CLIP_MEAN,
    CLIP_STD,
    OnePeaceConfig,
    OnePeaceModel,
    OnePeaceVideoConfig,
    OnePeaceVideoModel,
    audio_rel_pos_index,
    conv_stack_length,
    image_rel_pos_index,
)
from avel.extractors.weights import CheckpointMismatch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> OnePeaceModel:
    torch.manual_seed(0)
    return OnePeaceModel(OnePeaceConfig.tiny()).eval()


@pytest.fixture(scope="module")
def tiny_video() -> OnePeaceVideoModel:
    torch.manual_seed(1)
    return OnePeaceVideoModel(OnePeaceVideoConfig.tiny()).eval()


# ---------------------------------------------------------------------------------------------
# shapes and outputs at the tiny configuration
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def test_image_tokens_and_l2_embedding(tiny):
    x = torch.randn(3, 3, 64, 64)
    tokens = tiny.encode(x, modality="image")
    assert tokens.shape == (3, 1 + 4 * 4, 64)  # CLS + (64/16)^2 patches
    emb = tiny.embed(x, modality="image")
    assert emb.shape == (3, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    # embedding = L2(image_proj(CLS after the final LN))
    expected = torch.nn.functional.normalize(tiny.image_proj(tokens[:, 0]), dim=-1)
    torch.testing.assert_close(emb, expected)
    # images are encoded independently of their batch neighbours
    torch.testing.assert_close(tiny.embed(x[1:2], modality="image"), emb[1:2], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_image_wrong_size_is_rejected(tiny):
    with pytest.raises(ValueError, match="64 x 64"):
        tiny.encode(torch.randn(1, 3, 48, 48), modality="image")


@torch.no_grad()
def test_audio_tokens_one_second(tiny):
    wav = torch.nn.functional.layer_norm(torch.randn(2, 16000), (16000,))
    tokens = tiny.encode(wav, modality="audio")
    assert tokens.shape == (2, 1 + 49, 64)
    emb = tiny.embed(wav, modality="audio")
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    raw = tiny.embed(wav, modality="audio", project=False, normalize=False)
    torch.testing.assert_close(raw, tokens[:, 0])


def _reference_conv_length(n: int) -> int:
    # reference hub formula: L_out = 1 + (L_in + 2*pad - dil*(k-1) - 1) // stride, pad 0, dil 1
    for _, k, s in AUDIO_FEATURE_SPEC:
        n = 1 + (n + 2 * 0 - 1 * (k - 1) - 1) // s
    return n


@pytest.mark.parametrize("n_samples", [400, 4000, 16000, 16321, 24000])
def test_audio_conv_stack_length(tiny, n_samples):
    assert conv_stack_length(n_samples) == _reference_conv_length(n_samples)
    with torch.no_grad():
        frames = tiny.encoder_wrapper.audio_adapter.embed_audios(torch.randn(1, n_samples))
    assert frames.shape[1] == _reference_conv_length(n_samples)


def test_one_second_is_49_frames():
    assert conv_stack_length(16000) == 49  # 320-sample stride, receptive field 400 samples


@torch.no_grad()
def test_audio_too_long_is_rejected(tiny):
    with pytest.raises(ValueError, match="audio_max_positions"):
        tiny.encode(torch.randn(1, 16000 * 2), modality="audio")  # 99 + 1 tokens > 64


@torch.no_grad()
def test_relative_position_bias_is_used(tiny):
    x = torch.randn(1, 3, 64, 64)
    before = tiny.encode(x, modality="image")
    table = tiny.encoder_wrapper.image_adapter.rel_pos_table_list[0].weight
    saved = table.clone()
    table.add_(torch.randn_like(table))
    try:
        after = tiny.encode(x, modality="image")
    finally:
        table.copy_(saved)
    assert (before - after).abs().max() > 1e-3


@torch.no_grad()
def test_video_shapes(tiny_video):
    clips = torch.randn(2, 3, 4, 64, 64)
    per_frame = tiny_video.frame_features(clips)
    assert per_frame.shape == (2, 4, 64)
    torch.testing.assert_close(tiny_video(clips), per_frame.mean(dim=1))
    with pytest.raises(ValueError, match="B x 3 x 4 x 64 x 64"):
        tiny_video(torch.randn(1, 3, 3, 64, 64))


@torch.no_grad()
def test_video_frames_interact_through_temporal_adapter(tiny_video):
    clips = torch.randn(1, 3, 4, 64, 64)
    base = tiny_video.frame_features(clips)
    changed = clips.clone()
    changed[:, :, 3] = torch.randn(3, 64, 64)
    out = tiny_video.frame_features(changed)
    assert (out[0, 0] - base[0, 0]).abs().max() > 1e-4  # frame 0 sees frame 3


@torch.no_grad()
def test_video_model_without_adapters_equals_image_model():
    """With T/S/MLP adapters switched off (zero up-projections) and no temporal embedding, every frame
    of the video model must be the image model's CLS after the final LayerNorm with the same weights."""
    torch.manual_seed(3)
    vcfg = OnePeaceVideoConfig.tiny()
    video = OnePeaceVideoModel(vcfg).eval()
    image = OnePeaceModel(OnePeaceConfig.tiny(modalities=("image",))).eval()
    for layer in video.encoder.layers:
        for adapter in (layer.T_Adapter, layer.S_Adapter, layer.MLP_Adapter):
            adapter.D_fc2.weight.zero_()
            adapter.D_fc2.bias.zero_()
    video.image_adapter.temporal_embedding.zero_()
    sd = {}
    for key, value in video.state_dict().items():
        if "Adapter" in key or key.endswith("temporal_embedding"):
            continue
        key = key.replace("image_adapter.rel_pos_table.", "image_adapter.rel_pos_table_list.0.")
        key = ("encoder_wrapper." + key).replace("encoder_wrapper.encoder.", "encoder_wrapper.fusion_model.")
        sd[key] = value
    missing, unexpected = image.load_state_dict(sd, strict=False)
    assert unexpected == [] and set(missing) == {"image_proj.weight", "image_proj.bias"}
    clips = torch.randn(2, 3, 4, 64, 64)
    frames = clips.transpose(1, 2).reshape(8, 3, 64, 64)
    expected = image.encode(frames, modality="image")[:, 0].view(2, 4, -1)
    torch.testing.assert_close(video.frame_features(clips), expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_bf16_autocast_close_to_fp32(tiny):
    x = torch.randn(2, 3, 64, 64)
    ref = tiny.embed(x, modality="image")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = tiny.embed(x, modality="image")
    assert low.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(ref, low, dim=-1)
    assert cos.min() > 0.99


# ---------------------------------------------------------------------------------------------
# relative position index tables against an explicit computation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [2, 4, 16])
def test_image_rel_pos_index_explicit(grid):
    index = image_rel_pos_index(grid)
    n_rel = (2 * grid - 1) ** 2 + 3
    assert index.shape == (grid * grid + 1, grid * grid + 1)
    assert index.max().item() == n_rel - 1  # table rows: 964 at grid 16
    for i in range(grid * grid):
        ri, ci = divmod(i, grid)
        for j in range(grid * grid):
            rj, cj = divmod(j, grid)
            assert index[i + 1, j + 1] == (ri - rj + grid - 1) * (2 * grid - 1) + (ci - cj + grid - 1)
    assert index[0, 0] == n_rel - 1
    assert (index[0, 1:] == n_rel - 3).all() and (index[1:, 0] == n_rel - 2).all()


def _explicit_audio_bucket(rel: int, bucket_size: int, max_positions: int) -> int:
    mid = bucket_size // 2
    if abs(rel) <= mid:
        bucket = rel
    else:
        magnitude = mid + math.ceil(math.log(abs(rel) / mid) / math.log((max_positions - 1) / mid) * (mid - 1))
        bucket = magnitude if rel > 0 else -magnitude
    return bucket + bucket_size - 1


@pytest.mark.parametrize("bucket_size,max_positions", [(8, 64), (512, 1024)])
def test_audio_rel_pos_index_explicit(bucket_size, max_positions):
    index = audio_rel_pos_index(bucket_size, max_positions)
    n_rel = 2 * bucket_size - 1
    assert index.shape == (max_positions, max_positions)
    positions = range(1, max_positions, max(1, max_positions // 48))
    for i in positions:
        for j in positions:
            assert index[i, j] == _explicit_audio_bucket(i - j, bucket_size, max_positions), (i, j)
    assert index[0, 0] == n_rel + 2 and (index[0, 1:] == n_rel).all() and (index[1:, 0] == n_rel + 1).all()
    assert index.min() >= 0 and index.max() == n_rel + 2  # table rows: 1026 at bucket 512


# ---------------------------------------------------------------------------------------------
# full configuration on the meta device
# ---------------------------------------------------------------------------------------------
def _expected_counts(d=1536, f=6144, layers=40, heads=24, modalities=("image", "audio")) -> dict[str, int]:
    """Parameter counts from the architecture description (not from the module)."""
    attn = 3 * d * d + 2 * d + d * d + d + 2 * d  # q,v (bias) k (no bias), out_proj, magneto LN
    ffn = 2 * d * f + 2 * f + f * d + d  # wi_0, wi_1, LN(F), fc(F->D)
    per_layer_shared = attn + 2 * 2 * d + 2 * d  # two pre-LNs, gamma_1, gamma_2
    q = d // 4
    grid = 16
    image_adapter = (
        (3 * q * 16 + q)
        + 2 * q
        + (q * q * 4 + q)
        + 2 * q
        + (q * d * 4 + d)
        + d
        + (grid * grid + 1) * d
        + ((2 * grid - 1) ** 2 + 3) * heads
    )
    convs = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    conv_params, c_in = 0, 1
    for c, k, _ in convs:
        conv_params += c_in * c * k + 2 * c
        c_in = c
    audio_adapter = conv_params + 2 * 512 + (512 * d + d) + 5 * (d * (d // 16) * 19 + d) + d + d + (2 * 512 + 2) * heads
    counts = {"shared_layers": layers * per_layer_shared}
    if "image" in modalities:
        counts.update(image_adapter=image_adapter, image_ffn=layers * ffn, image_head=2 * d + d * d + d)
    if "audio" in modalities:
        counts.update(audio_adapter=audio_adapter, audio_ffn=layers * ffn, audio_head=2 * d + d * d + d)
    return counts


def test_full_config_on_meta_device_parameter_count():
    with torch.device("meta"):
        model = OnePeaceModel(OnePeaceConfig.full())
    assert all(p.device.type == "meta" for p in model.parameters())
    expected = _expected_counts()
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(expected.values())
    layer0 = model.encoder_wrapper.fusion_model.layers[0]
    assert sum(p.numel() for p in layer0.image_ffn.parameters()) * 40 == expected["image_ffn"]
    assert sum(p.numel() for p in model.encoder_wrapper.audio_adapter.parameters()) == expected["audio_adapter"]
    assert sum(p.numel() for p in model.encoder_wrapper.image_adapter.parameters()) == expected["image_adapter"]
    assert 2.6e9 < total < 2.7e9  # image + audio encoders; the text branch (not built) brings ONE-PEACE to ~4B
    assert model.encoder_wrapper.audio_adapter.rel_pos_table_list[0].weight.shape == (1026, 24)
    assert model.encoder_wrapper.image_adapter.rel_pos_table_list[0].weight.shape == (964, 24)


def test_full_video_config_on_meta_device_parameter_count():
    with torch.device("meta"):
        model = OnePeaceVideoModel(OnePeaceVideoConfig.full())
    d, layers, r = 1536, 40, 384
    c = _expected_counts(modalities=("image",))
    adapters = 3 * (d * r + r + r * d + d)
    expected = c["shared_layers"] + c["image_ffn"] + layers * adapters + (c["image_adapter"] + 16 * d) + 2 * d
    assert sum(p.numel() for p in model.parameters()) == expected


# ---------------------------------------------------------------------------------------------
# checkpoints in the official layouts
# ---------------------------------------------------------------------------------------------
def _official_fairseq_keys(cfg: OnePeaceConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the encoder part of one-peace.pt for ``cfg``, written out from the official naming."""
    d, f, h, g = cfg.embed_dim, cfg.ffn_embed_dim, cfg.attention_heads, cfg.grid_size
    q = d // 4
    keys: dict[str, tuple[int, ...]] = {}
    ia = "encoder_wrapper.image_adapter."
    keys.update(
        {
            ia + "embed_images.0.weight": (q, 3, 4, 4),
            ia + "embed_images.0.bias": (q,),
            ia + "embed_images.1.layer_norm.weight": (q,),
            ia + "embed_images.1.layer_norm.bias": (q,),
            ia + "embed_images.3.weight": (q, q, 2, 2),
            ia + "embed_images.3.bias": (q,),
            ia + "embed_images.4.layer_norm.weight": (q,),
            ia + "embed_images.4.layer_norm.bias": (q,),
            ia + "embed_images.6.weight": (d, q, 2, 2),
            ia + "embed_images.6.bias": (d,),
            ia + "cls_embedding": (1, 1, d),
            ia + "pos_embed": (cfg.pos_bucket_size**2 + 1, d),
            ia + "rel_pos_table_list.0.weight": ((2 * g - 1) ** 2 + 3, h),
        }
    )
    aa = "encoder_wrapper.audio_adapter."
    c_in = 1
    for i, (c, k, _) in enumerate(cfg.audio_feature_spec):
        keys[aa + f"embed_audios.0.conv_layers.{i}.0.weight"] = (c, c_in, k)
        keys[aa + f"embed_audios.0.conv_layers.{i}.2.1.weight"] = (c,)
        keys[aa + f"embed_audios.0.conv_layers.{i}.2.1.bias"] = (c,)
        c_in = c
    keys.update(
        {
            aa + "embed_audios.2.weight": (c_in,),
            aa + "embed_audios.2.bias": (c_in,),
            aa + "embed_audios.3.weight": (d, c_in),
            aa + "embed_audios.3.bias": (d,),
            aa + "cls_pos_embed": (1, 1, d),
            aa + "cls_embedding": (1, 1, d),
            aa + "rel_pos_table_list.0.weight": (2 * cfg.audio_rel_bucket_size + 2, h),
        }
    )
    for i in range(1, 6):
        keys[aa + f"embed_positions.{i}.0.weight"] = (d, d // cfg.audio_conv_pos_groups, 19)
        keys[aa + f"embed_positions.{i}.0.bias"] = (d,)
    fm = "encoder_wrapper.fusion_model."
    for i in range(cfg.layers):
        p = f"{fm}layers.{i}."
        keys.update(
            {
                p + "self_attn.k_proj.weight": (d, d),
                p + "self_attn.v_proj.weight": (d, d),
                p + "self_attn.v_proj.bias": (d,),
                p + "self_attn.q_proj.weight": (d, d),
                p + "self_attn.q_proj.bias": (d,),
                p + "self_attn.out_proj.weight": (d, d),
                p + "self_attn.out_proj.bias": (d,),
                p + "self_attn.ln.weight": (d,),
                p + "self_attn.ln.bias": (d,),
                p + "self_attn_layer_norm.weight": (d,),
                p + "self_attn_layer_norm.bias": (d,),
                p + "final_layer_norm.weight": (d,),
                p + "final_layer_norm.bias": (d,),
                p + "gamma_1": (d,),
                p + "gamma_2": (d,),
            }
        )
        for m in ("text", "image", "audio"):
            keys.update(
                {
                    p + f"{m}_ffn.0.wi_0.weight": (f, d),
                    p + f"{m}_ffn.0.wi_1.weight": (f, d),
                    p + f"{m}_ffn.2.weight": (f,),
                    p + f"{m}_ffn.2.bias": (f,),
                    p + f"{m}_ffn.3.weight": (d, f),
                    p + f"{m}_ffn.3.bias": (d,),
                }
            )
    for m in ("text", "image", "audio"):
        keys[fm + f"{m}_layer_norm.weight"] = (d,)
        keys[fm + f"{m}_layer_norm.bias"] = (d,)
        keys[f"{m}_proj.weight"] = (d, d)
        keys[f"{m}_proj.bias"] = (d,)
    # parts of the pretraining checkpoint the encoders do not use
    keys.update(
        {
            "encoder_wrapper.text_adapter.embed_tokens.weight": (100, d),
            "logit_scale": (),
            aa + "mask_embedding": (1, d),
            "decoder_wrapper.fusion_model.layers.0.gamma_1": (8,),
            "image_mask_token": (1, 8),
            "decoder_image_embed.weight": (8, d),
        }
    )
    return keys


def _fairseq_state(cfg: OnePeaceConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.02 * torch.randn(shape, generator=gen) for k, shape in _official_fairseq_keys(cfg).items()}
    state["encoder_wrapper.image_adapter.rp_bucket"] = image_rel_pos_index(cfg.grid_size)
    state["encoder_wrapper.image_adapter.position_idx"] = torch.arange(cfg.pos_bucket_size**2 + 1)
    state["encoder_wrapper.audio_adapter.rp_bucket"] = audio_rel_pos_index(
        cfg.audio_rel_bucket_size, cfg.audio_max_positions
    )
    state["encoder_wrapper.fusion_model.version"] = torch.tensor([3.0])
    return state


def _save_fairseq(path, model_state):
    """Save like fairseq: an argparse Namespace and a config object of a package that is not installed."""
    fake = types.ModuleType("fake_fairseq_dataclass")
    sys.modules[fake.__name__] = fake

    class Choices:
        def __init__(self, value):
            self.value = value

    class ConfigDict(dict):
        pass

    class ConfigList(list):
        pass

    for cls in (Choices, ConfigDict, ConfigList):
        cls.__module__ = fake.__name__
        cls.__qualname__ = cls.__name__
        setattr(fake, cls.__name__, cls)
    cfg = ConfigDict(model=Choices("hmlp"), layers=ConfigList([1, 2]))
    try:
        torch.save(
            {"args": argparse.Namespace(arch="one_peace"), "cfg": cfg, "model": model_state, "optimizer_history": []},
            path,
        )
    finally:
        del sys.modules[fake.__name__]


def test_fairseq_layout_loads_without_missing_or_unexpected_keys(tmp_path):
    cfg = OnePeaceConfig.tiny()
    state = _fairseq_state(cfg)
    path = tmp_path / "one-peace.pt"
    _save_fairseq(path, state)
    ckpt = load_checkpoint_file(path)
    assert ckpt["args"].arch == "one_peace"
    assert "placeholder for fake_fairseq_dataclass.ConfigDict" in repr(ckpt["cfg"])  # never imported
    assert ckpt["cfg"]._items["layers"]._list == [1, 2]
    model = load_onepeace(path, cfg)
    own = model.state_dict()
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], msg=key)
    assert all(p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        emb = model.embed(torch.randn(2, 3, 64, 64), modality="image")
        aud = model.embed(torch.randn(2, 16000), modality="audio")
    assert torch.isfinite(emb).all() and torch.isfinite(aud).all()


def test_fairseq_legacy_single_table_name_is_renamed(tmp_path):
    cfg = OnePeaceConfig.tiny(modalities=("image",))
    state = _fairseq_state(cfg)
    table = state.pop("encoder_wrapper.image_adapter.rel_pos_table_list.0.weight")
    state["encoder_wrapper.image_adapter.rel_pos_table.weight"] = table
    path = tmp_path / "legacy.pt"
    _save_fairseq(path, state)
    model = load_onepeace(path, cfg)
    torch.testing.assert_close(model.encoder_wrapper.image_adapter.rel_pos_table_list[0].weight, table)
    assert not hasattr(model.encoder_wrapper, "audio_adapter")


def test_fairseq_missing_and_unexpected_keys_are_reported(tmp_path):
    cfg = OnePeaceConfig.tiny()
    state = _fairseq_state(cfg)
    del state["encoder_wrapper.fusion_model.layers.1.gamma_2"]
    state["encoder_wrapper.fusion_model.layers.0.self_attn.c_attn"] = torch.ones(2)
    path = tmp_path / "broken.pt"
    _save_fairseq(path, state)
    with pytest.raises(CheckpointError) as err:
        load_onepeace(path, cfg)
    msg = str(err.value)
    assert "broken.pt" in msg and "one-peace.pt" in msg
    assert "missing keys (1): encoder_wrapper.fusion_model.layers.1.gamma_2" in msg
    assert "unexpected keys (1): encoder_wrapper.fusion_model.layers.0.self_attn.c_attn" in msg
    assert isinstance(err.value, CheckpointMismatch)  # what `avel` callers catch for every extractor
    assert err.value.missing == ["encoder_wrapper.fusion_model.layers.1.gamma_2"]
    assert err.value.unexpected == ["encoder_wrapper.fusion_model.layers.0.self_attn.c_attn"]


def test_fairseq_shape_mismatch_is_reported(tmp_path):
    state = _fairseq_state(OnePeaceConfig.tiny(image_size=32))  # 2 x 2 patch grid
    path = tmp_path / "small.pt"
    _save_fairseq(path, state)
    match = r"rel_pos_table_list\.0\.weight: checkpoint \(12, 2\) vs model \(52, 2\)"
    with pytest.raises(CheckpointError, match=match):
        load_onepeace(path, OnePeaceConfig.tiny())


def test_fairseq_without_model_dict_is_rejected(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="no 'model' dict.*one-peace.pt"):
        load_onepeace(path, OnePeaceConfig.tiny())


def _mmaction_state(model: OnePeaceVideoModel) -> dict[str, torch.Tensor]:
    state = {"backbone." + k: v.clone() for k, v in model.state_dict().items()}
    state["backbone.image_adapter.rp_bucket"] = image_rel_pos_index(model.cfg.bucket_size)
    state["cls_head.fc_cls.weight"] = torch.zeros(400, model.cfg.embed_dim)
    state["cls_head.fc_cls.bias"] = torch.zeros(400)
    return state


def test_video_checkpoint_mmaction_layout(tmp_path, tiny_video):
    state = _mmaction_state(tiny_video)
    for key in (
        "backbone.encoder.layers.0.T_Adapter.D_fc1.weight",
        "backbone.image_adapter.temporal_embedding",
        "backbone.image_adapter.rel_pos_table.weight",
        "backbone.encoder.image_layer_norm.weight",
        "backbone.encoder.layers.1.MLP_Adapter.D_fc2.bias",
        "backbone.encoder.layers.1.image_ffn.0.wi_1.weight",
    ):
        assert key in state
    path = tmp_path / "onepeace_video_k400.pth"
    torch.save({"meta": {"config": "x"}, "state_dict": state}, path)
    loaded = load_onepeace_video(path, tiny_video.cfg)
    clips = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), tiny_video(clips))
    del state["backbone.encoder.layers.1.S_Adapter.D_fc1.bias"]
    torch.save({"state_dict": state}, path)
    match = r"(?s)onepeace_video_k400\.pth.*missing keys \(1\): encoder\.layers\.1\.S_Adapter\.D_fc1\.bias"
    with pytest.raises(CheckpointError, match=match):
        load_onepeace_video(path, tiny_video.cfg)


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------
def test_preprocess_images_matches_pil_bicubic():
    rng = np.random.default_rng(0)
    frames = (rng.random((2, 90, 160, 3)) * 255).astype(np.uint8)
    out = preprocess_images(frames, size=64)
    assert out.shape == (2, 3, 64, 64)
    for i in range(2):
        ref = np.asarray(Image.fromarray(frames[i]).resize((64, 64), Image.BICUBIC), dtype=np.float32) / 255.0
        ref = (torch.from_numpy(ref).permute(2, 0, 1) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(
            CLIP_STD
        ).view(3, 1, 1)
        levels = ((out[i] - ref) * torch.tensor(CLIP_STD).view(3, 1, 1) * 255).abs()
        assert levels.max() <= 1.0 + 1e-3


def test_preprocess_video_k400_center_crop_and_norm():
    frames = np.zeros((1, 64, 80, 3), np.uint8)
    frames[0, :, :, 0] = np.arange(80, dtype=np.uint8)[None, :]  # red = column index
    frames[0, :, :, 1] = 200
    out = preprocess_video_k400(frames, size=64)  # short side already 64: crop columns 8..71
    assert out.shape == (1, 3, 64, 64)
    red = out[0, 0] * 68.5 + 122.771
    torch.testing.assert_close(red[0], torch.arange(8, 72, dtype=torch.float32), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[0, 1], torch.full((64, 64), (200 - 116.746) / 66.632))
    resized = preprocess_video_k400(np.full((2, 32, 48, 3), 90, np.uint8), size=64)  # 32x48 -> 64x96 -> crop
    assert resized.shape == (2, 3, 64, 64)
    torch.testing.assert_close(resized[:, 2], torch.full((2, 64, 64), (90 - 104.094) / 70.323))


# ---------------------------------------------------------------------------------------------
# extractors (interface of avel.extractors.base)
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def test_image_extractor_window_is_mean_of_frame_embeddings():
    ext = OnePeaceImageExtractor.random_init(preset="tiny", seed=0)
    assert ext.weights_sha256 == "random" and ext.plan.window_frames == 4
    frames = torch.randint(0, 256, (9, 48, 60, 3), dtype=torch.uint8)
    win = ext.windows(frames)
    assert win.num_rows == ext.plan.num_rows(9) == 3
    rows = ext.extract(win.data)
    assert rows.shape == (3, 64)
    per_frame = ext.model.embed(preprocess_images(frames, size=64), modality="image")  # 9 x 64, unit norm
    for r, (start, end) in enumerate(win.bounds):
        torch.testing.assert_close(rows[r], per_frame[start:end].mean(0), atol=1e-5, rtol=1e-4)
    cls = OnePeaceImageExtractor.random_init(preset="tiny", seed=0, output="cls")
    assert not hasattr(cls.model, "image_proj")
    expected = cls.model.encode(preprocess_images(frames[:4], size=64), modality="image")[:, 0].mean(0)
    torch.testing.assert_close(cls.extract(win.data[:1])[0], expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_audio_extractor_windows_normalisation_and_embedding():
    ext = OnePeaceAudioExtractor.random_init(preset="tiny", seed=0)
    wav = torch.randn(16000 + 4000 * 2 + 123)
    win = ext.windows(wav)
    assert win.data.shape == (3, 16000) and win.bounds[:, 0].tolist() == [0, 4000, 8000]
    rows = ext.extract(win.data)
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(rows[1], ext.model.embed(normalize_waveform(wav[4000:20000])[None], modality="audio")[0])
    # per-window layer norm: gain and offset of the input do not matter
    torch.testing.assert_close(ext.extract(3.0 * win.data + 0.5), rows, atol=1e-5, rtol=1e-4)
    short = ext.windows(torch.randn(7000))
    assert short.padded and short.data.shape == (1, 16000)
    assert ext.extract(short.data).shape == (1, 64)


@torch.no_grad()
def test_video_k400_extractor_windows_are_clips():
    ext = OnePeaceVideoK400Extractor.random_init(preset="tiny", seed=0)
    assert ext.decode_spec.short_side == 64 and ext.decode_spec.center_crop == 64
    frames = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)
    win = ext.windows(frames)
    x = ext.preprocess(win.data)
    assert x.shape == (3, 3, 4, 64, 64)  # B x 3 x T x S x S
    rows = ext.forward(x)
    assert rows.shape == (3, 64)
    clip = frames[2:6]
    mean = torch.tensor([122.771, 116.746, 104.094]).view(3, 1, 1, 1)
    std = torch.tensor([68.5, 66.632, 70.323]).view(3, 1, 1, 1)
    expected = ext.model(((clip.permute(3, 0, 1, 2).float() - mean) / std)[None])  # 1 x 3 x T x S x S
    torch.testing.assert_close(rows[1:2], expected, atol=1e-5, rtol=1e-4)


def test_full_presets_build_on_meta():
    image = OnePeaceImageExtractor.build(device="meta")
    audio = OnePeaceAudioExtractor.build(device="meta")
    video = OnePeaceVideoK400Extractor.build(device="meta")
    c = _expected_counts()
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(image) == c["shared_layers"] + c["image_adapter"] + c["image_ffn"] + c["image_head"]
    assert n(audio) == c["shared_layers"] + c["audio_adapter"] + c["audio_ffn"] + c["audio_head"]
    assert n(video) > 1.6e9
    assert image.feature_shape == audio.feature_shape == video.feature_shape == (1536,)
    assert (video.plan.fps, video.plan.window_frames, video.plan.stride_frames) == (16.0, 16, 4)
    assert (audio.plan.sample_rate, audio.plan.window_s, audio.plan.hop_s) == (16000, 1.0, 0.25)


def test_extractor_config_validation():
    with pytest.raises(ValueError, match="output"):
        OnePeaceImageExtractor.make_config(output="pooled")
    with pytest.raises(ValueError, match="16 kHz"):
        OnePeaceAudioExtractor.make_config(sample_rate=8000)
    with pytest.raises(TypeError, match="unknown config keys"):
        OnePeaceVideoK400Extractor.make_config(num_classes=400)


@torch.no_grad()
def test_extractors_from_fairseq_checkpoint(tmp_path):
    cfg = OnePeaceConfig.tiny()
    state = _fairseq_state(cfg, seed=5)
    path = tmp_path / "one-peace.pt"
    _save_fairseq(path, state)
    image = OnePeaceImageExtractor.from_checkpoint(tmp_path, preset="tiny")  # directory with the official name
    audio = OnePeaceAudioExtractor.from_checkpoint({"model": path}, preset="tiny")
    assert image.weights_sha256 == audio.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.testing.assert_close(image.model.image_proj.weight, state["image_proj.weight"])
    torch.testing.assert_close(
        audio.model.encoder_wrapper.fusion_model.layers[1].audio_ffn[3].weight,
        state["encoder_wrapper.fusion_model.layers.1.audio_ffn.3.weight"],
    )
    cls_out = OnePeaceImageExtractor.from_checkpoint(path, preset="tiny", output="cls")
    assert not hasattr(cls_out.model, "image_proj")
    reference = load_onepeace(path, cfg)
    wav = torch.randn(2, 16000)
    torch.testing.assert_close(audio.extract(wav), reference.embed(normalize_waveform(wav), modality="audio"))
    with pytest.raises(FileNotFoundError, match="one-peace.pt"):
        OnePeaceAudioExtractor.from_checkpoint(tmp_path / "elsewhere", preset="tiny")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        OnePeaceImageExtractor.from_checkpoint(path, preset="tiny", image_size=32, pos_bucket_size=2)


@torch.no_grad()
def test_video_extractor_from_mmaction_checkpoint(tmp_path):
    source = OnePeaceVideoK400Extractor.random_init(preset="tiny", seed=4)
    path = tmp_path / "onepeace_video_k400.pth"
    wrapped = {"module." + k: v for k, v in _mmaction_state(source.model).items()}  # saved from DataParallel
    torch.save({"meta": {"env": "x"}, "state_dict": wrapped}, path)
    loaded = OnePeaceVideoK400Extractor.from_checkpoint(path, preset="tiny")
    assert loaded.weights_sha256 not in ("random", "uninitialized")
    batch = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8)
    torch.testing.assert_close(loaded.extract(batch), source.extract(batch))
    with pytest.raises(CheckpointError, match="onepeace_video_k400.pth"):
        OnePeaceVideoK400Extractor.from_checkpoint(path, preset="tiny", adapter_ratio=0.5)


@torch.no_grad()
@pytest.mark.parametrize("cls", [OnePeaceImageExtractor, OnePeaceAudioExtractor, OnePeaceVideoK400Extractor])
def test_bf16_weights_path_matches_fp32(cls):
    """The GPU path (bf16 weights + autocast, as from_checkpoint sets up on CUDA) run on the CPU."""
    fp32 = cls.random_init(preset="tiny", seed=2)
    bf16 = cls.random_init(preset="tiny", seed=2, amp_dtype="bf16").to(torch.bfloat16)
    if cls.modality == "video":
        batch = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8)
    else:
        batch = torch.randn(2, 16000)
    low = bf16.extract(batch)
    assert low.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(low, fp32.extract(batch), dim=-1).min() > 0.99


def test_registry_entries():
    import avel.extractors as extractors

    for name, cls in [
        ("onepeace_image", OnePeaceImageExtractor),
        ("onepeace_audio", OnePeaceAudioExtractor),
        ("onepeace_video_k400", OnePeaceVideoK400Extractor),
    ]:
        assert extractors.get(name) is cls
        assert name in extractors.list_extractors()
    assert OnePeaceAudioExtractor.checkpoint_files == {"model": "one-peace.pt"}
    assert OnePeaceVideoK400Extractor.checkpoint_files == {"model": "onepeace_video_k400.pth"}


def test_check_checkpoint_and_cli_verify(tmp_path):
    from click.testing import CliRunner

    from avel.cli.main import cli

    state = _fairseq_state(OnePeaceConfig.tiny(), seed=6)
    good = tmp_path / "one-peace.pt"
    _save_fairseq(good, state)
    report = OnePeaceAudioExtractor.check_checkpoint(good, preset="tiny")
    assert report.ok and report.weights_sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert "model.encoder_wrapper.audio_adapter.cls_embedding" in report.state
    runner = CliRunner()
    res = runner.invoke(cli, ["weights", "verify", str(good), "--extractor", "onepeace_image", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert "ok:" in res.output and report.weights_sha256 in res.output
    del state["encoder_wrapper.audio_adapter.embed_audios.3.bias"]
    bad = tmp_path / "bad.pt"
    _save_fairseq(bad, state)
    report = OnePeaceAudioExtractor.check_checkpoint(bad, preset="tiny")
    assert not report.ok and report.missing == ["model.encoder_wrapper.audio_adapter.embed_audios.3.bias"]
    res = runner.invoke(cli, ["weights", "verify", str(bad), "--extractor", "onepeace_audio", "--preset", "tiny"])
    assert res.exit_code == 1 and "embed_audios.3.bias" in res.output and "one-peace.pt" in res.output
    # the image branch does not need the audio key: the same file verifies for onepeace_image
    assert OnePeaceImageExtractor.check_checkpoint(bad, preset="tiny").ok
