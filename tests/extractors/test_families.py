"""Backbone families: parity with each library's own preprocessing + model on the same decoded
frames / samples (tiny random models), weights handling, backbone files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import avel.extractors as E
from avel.extractors.weights import CheckpointMismatch, sha256_file

TOL = 1e-5


def _frames(t: int = 8, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    """A smooth synthetic video (uint8 T x H x W x 3) standing in for decoded frames."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 4, w // 4, generator=g)
    ramp = torch.linspace(0, 1, t).view(t, 1, 1, 1)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear") * 0.7 + 0.3 * ramp
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _wave(seconds: float = 1.5, rate: int = 16000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * np.pi * 440 * t) + 0.05 * torch.randn(t.shape, generator=g)).float()


def _rows(ext, data) -> torch.Tensor:
    return ext.extract(ext.windows(data).data)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def _window_frames(ext, frames):
    return [frames[int(s) : int(e)] for s, e in ext.plan.window_bounds(ext.plan.num_rows(frames.shape[0]))]


# -- torchvision ------------------------------------------------------------------------------
def test_tv_video_matches_torchvision_preset_and_model():
    from torchvision import models

    ext = E.get("tv_video").random_init(preset="tiny", model="r3d_18")
    ref = models.get_model("r3d_18", weights=None).eval()
    missing = ref.load_state_dict(ext.model.state_dict(), strict=False)
    assert missing.missing_keys == ["fc.weight", "fc.bias"] and not missing.unexpected_keys
    captured = []
    ref.fc.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    preset = models.get_model_weights("r3d_18").DEFAULT.transforms()
    frames = _frames(t=5)  # one 4-frame window (the preset resizes to 128 x 171: keep it to one clip)
    with torch.no_grad():
        for clip in _window_frames(ext, frames):  # the library applied window by window
            ref(preset(clip.permute(0, 3, 1, 2)).unsqueeze(0))
    assert _max_diff(_rows(ext, frames), torch.cat(captured)) <= TOL
    assert ext.feature_shape == (512,) and ext.plan.window_frames == 4


def test_tv_image_matches_torchvision_preset_on_pil_frames():
    from torchvision import models

    ext = E.get("tv_image").random_init(preset="tiny")  # mobilenet_v3_small, 2 frames per row, mean
    ref = models.get_model("mobilenet_v3_small", weights=None).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=False)
    captured = []
    ref.classifier[3].register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    preset = models.get_model_weights("mobilenet_v3_small").DEFAULT.transforms()
    frames = _frames()
    from PIL import Image

    with torch.no_grad():
        for clip in _window_frames(ext, frames):
            ref(torch.stack([preset(Image.fromarray(f.numpy())) for f in clip]))
    expected = torch.stack([c.mean(0) for c in captured])
    assert _max_diff(_rows(ext, frames), expected) <= TOL


# -- timm ----------------------------------------------------------------------------------------
def test_timm_image_matches_timm_transform_and_model():
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    ext = E.get("timm_image").random_init(preset="tiny", pooling="max")
    ref = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    transform = create_transform(**resolve_data_config({}, model=ref))
    frames = _frames()
    with torch.no_grad():
        expected = torch.stack(
            [
                ref(torch.stack([transform(Image.fromarray(f.numpy())) for f in clip])).amax(0)
                for clip in _window_frames(ext, frames)
            ]
        )
    assert _max_diff(_rows(ext, frames), expected) <= TOL


def test_timm_tensor_preprocessing_is_close_to_pil():
    frames = _frames()
    pil = E.get("timm_image").random_init(preset="tiny")
    tensor = E.get("timm_image").random_init(preset="tiny", preprocessing="tensor")
    a, b = pil.preprocess(pil.windows(frames).data), tensor.preprocess(tensor.windows(frames).data)
    assert a.shape == b.shape
    # PIL and antialiased tensor bicubic resizing differ by about a grey level (normalised units)
    assert 0 < float((a - b).abs().mean()) < 0.05


# -- open_clip -----------------------------------------------------------------------------------
def test_clip_image_and_text_match_open_clip():
    import open_clip
    from PIL import Image

    ext = E.get("clip_image").random_init(preset="tiny")
    ref, _, preprocess = open_clip.create_model_and_transforms("avel-tiny-clip", pretrained=None)
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    ref.eval()
    frames = _frames()
    with torch.no_grad():
        expected = torch.stack(
            [
                ref.encode_image(torch.stack([preprocess(Image.fromarray(f.numpy())) for f in clip])).mean(0)
                for clip in _window_frames(ext, frames)
            ]
        )
        text_ref = ref.encode_text(open_clip.get_tokenizer("avel-tiny-clip")(["a dog barking", "a car"]))
    assert _max_diff(_rows(ext, frames), expected) <= TOL
    assert _max_diff(ext.embed_text(["a dog barking", "a car"]), text_ref) <= TOL
    assert ext.feature_shape == (32,)


def test_clip_build_does_not_log_random_initialisation(caplog):
    """open_clip's "Model initialized randomly" (it sees pretrained=None) is not logged by our
    builds: a checkpoint load would otherwise announce random weights; other records pass."""
    import logging

    with caplog.at_level(logging.WARNING):
        E.get("clip_image").build(device="meta", preset="tiny")
        logging.warning("another notice")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("initialized randomly" in m for m in messages), messages
    assert "another notice" in messages


# -- transformers --------------------------------------------------------------------------------
def test_transformers_does_not_take_the_repo_datasets_folder_for_hf_datasets():
    import importlib.util

    E.get("hf_video").random_init(preset="tiny")
    from transformers.utils import is_datasets_available

    spec = importlib.util.find_spec("datasets")
    ours = (
        spec is not None
        and spec.origin
        and spec.origin.endswith("datasets/__init__.py")
        and "site-packages" not in spec.origin
    )
    if ours:
        assert is_datasets_available() is False


def test_hf_video_videomae_matches_its_processor_and_model():
    from transformers import VideoMAEConfig, VideoMAEModel, VideoMAEVideoProcessor

    ext = E.get("hf_video").random_init(preset="tiny")
    arch, proc = ext.config.architecture, ext.config.processor
    ref = VideoMAEModel(VideoMAEConfig(**arch)).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    processor = VideoMAEVideoProcessor(**proc)
    frames = _frames()
    clips = [c.numpy() for c in _window_frames(ext, frames)]  # list of T x H x W x 3 uint8 videos
    with torch.no_grad():
        pv = processor(videos=clips, return_tensors="pt")["pixel_values"]
        expected = ref(pixel_values=pv).last_hidden_state.mean(1)
    assert _max_diff(_rows(ext, frames), expected) <= TOL


def test_hf_video_xclip_backbone_file_matches_get_video_features():
    from transformers import CLIPImageProcessor, XCLIPConfig, XCLIPModel

    ext = E.get("xclip_b32").random_init(preset="tiny")
    ref = XCLIPModel(XCLIPConfig(**ext.config.architecture)).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    processor = CLIPImageProcessor(**ext.config.processor)
    frames = _frames()
    with torch.no_grad():
        out = []
        for clip in _window_frames(ext, frames):
            pv = processor(images=list(clip.numpy()), return_tensors="pt")["pixel_values"].unsqueeze(0)
            v = ref.get_video_features(pixel_values=pv)
            out.append(v if isinstance(v, torch.Tensor) else v.pooler_output)
    assert _max_diff(_rows(ext, frames), torch.cat(out)) <= TOL
    assert ext.feature_shape == (16,)


def test_hf_audio_ast_matches_its_feature_extractor_and_model():
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    ext = E.get("hf_audio").random_init(preset="tiny")
    ref = ASTModel(ASTConfig(**ext.config.architecture)).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    fe = ASTFeatureExtractor(sampling_rate=16000, **ext.config.processor)
    wave = _wave()
    bounds = ext.plan.window_bounds(ext.plan.num_rows(wave.shape[0]))
    with torch.no_grad():
        inputs = fe([wave[int(s) : int(e)].numpy() for s, e in bounds], sampling_rate=16000, return_tensors="pt")
        expected = ref(**inputs).pooler_output
    assert _max_diff(_rows(ext, wave), expected) <= TOL


def test_hf_audio_wav2vec2_backbone_file_matches_library():
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    ext = E.get("wav2vec2_base_hf").random_init(preset="tiny")
    ref = Wav2Vec2Model(Wav2Vec2Config(**ext.config.architecture)).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    fe = Wav2Vec2FeatureExtractor()
    wave = _wave()
    bounds = ext.plan.window_bounds(ext.plan.num_rows(wave.shape[0]))
    with torch.no_grad():
        inputs = fe([wave[int(s) : int(e)].numpy() for s, e in bounds], sampling_rate=16000, return_tensors="pt")
        expected = ref(**inputs).last_hidden_state.mean(1)
    assert _max_diff(_rows(ext, wave), expected) <= TOL


def test_torchaudio_bundle_matches_wav2vec2_model():
    import torchaudio
    from torchaudio.models import wav2vec2_model

    ext = E.get("torchaudio_audio").random_init(preset="tiny")
    params = {**torchaudio.pipelines.WAV2VEC2_BASE._params, **ext.config.params}
    params["extractor_conv_layer_config"] = [tuple(x) for x in params["extractor_conv_layer_config"]]
    ref = wav2vec2_model(**params).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    wave = _wave()
    bounds = ext.plan.window_bounds(ext.plan.num_rows(wave.shape[0]))
    with torch.no_grad():
        feats, _ = ref.extract_features(torch.stack([wave[int(s) : int(e)] for s, e in bounds]))
    assert _max_diff(_rows(ext, wave), feats[-1].mean(1)) <= TOL


# -- weights -------------------------------------------------------------------------------------
def test_state_dict_file_is_verified_and_its_sha256_recorded(tmp_path):
    rnd = E.get("timm_image").random_init(preset="tiny", seed=3)
    path = tmp_path / "test_vit.pth"
    torch.save(rnd.model.state_dict(), path)
    loaded = E.get("timm_image").from_checkpoint(path, preset="tiny")
    assert loaded.weights_sha256 == sha256_file(path)
    frames = _frames()
    assert torch.equal(_rows(loaded, frames), _rows(rnd, frames))
    state = rnd.model.state_dict()
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatch, match="missing keys"):
        E.get("timm_image").from_checkpoint(tmp_path / "bad.pth", preset="tiny")


def test_torchvision_checkpoint_with_classifier_loads(tmp_path):
    from torchvision import models

    torch.manual_seed(1)
    full = models.get_model("r3d_18", weights=None)  # a checkpoint as torchvision ships it (fc included)
    torch.save(full.state_dict(), tmp_path / "r3d.pth")
    ext = E.get("tv_video").from_checkpoint(tmp_path / "r3d.pth", preset="tiny", model="r3d_18")
    assert torch.equal(ext.model.stem[0].weight, full.stem[0].weight)
    assert ext.weights_sha256 == sha256_file(tmp_path / "r3d.pth")


def test_hf_save_pretrained_directory_loads_with_state_digest(tmp_path):
    rnd = E.get("hf_audio").random_init(preset="tiny", seed=5)
    rnd.model.save_pretrained(tmp_path)
    rnd.processor.save_pretrained(tmp_path)
    loaded = E.get("hf_audio").from_checkpoint(tmp_path, preset="tiny")
    assert loaded.weights_sha256.startswith("state:") and len(loaded.weights_sha256) == 6 + 64
    wave = _wave()
    assert _max_diff(_rows(loaded, wave), _rows(rnd, wave)) <= TOL


def test_no_silent_random_weights():
    from avel.pipeline.engine import build_stream_extractors

    with pytest.raises(ValueError, match="no weights"):
        build_stream_extractors(["timm_image"], preset="tiny")
    [se] = build_stream_extractors(["timm_image"], preset="tiny", random_weights=True)
    assert se.extractor.weights_sha256 == "random"


# -- backbone files ------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_backbone_file_builds_its_full_model_on_meta_and_its_tiny_preset():
    from avel.extractors.backbones import list_backbones, load_backbone_file

    names = list_backbones()
    families = {load_backbone_file(p).family for p in names.values()}
    assert families == {"tv_video", "hf_video", "tv_image", "timm_image", "clip_image", "hf_audio", "torchaudio_audio"}
    for name in names:
        cls = E.get(name)
        assert cls.name == name and cls.default_weights
        full = cls.build(device="meta")
        assert full.feature_shape[0] >= 256, name  # the real architecture, not the tiny one
        assert cls.make_config("tiny").preset == "tiny"


def test_backbone_file_errors_name_file_and_key(tmp_path):
    from avel.extractors.backbones import load_backbone_file

    bad = tmp_path / "b.yaml"
    bad.write_text("family: timm_image\nconfig: {model: test_vit}\nweight: x\n")
    with pytest.raises(ValueError, match=r"b\.yaml: top level: unknown key\(s\) \['weight'\]"):
        load_backbone_file(bad)
    bad.write_text("family: nope\n")
    with pytest.raises(ValueError, match=r"b\.yaml: family: expected 'tv_video', .*, got 'nope'"):
        load_backbone_file(bad)
    bad.write_text("family: timm_image\nweights: 3\n")
    with pytest.raises(ValueError, match=r"b\.yaml: weights: expected a string, got 3"):
        load_backbone_file(bad)
    bad.write_text("family: timm_image\nconfig: {model: test_vit, fsp: 2}\n")
    with pytest.raises(ValueError, match=r"b\.yaml: config: unknown key\(s\) \['fsp'\] for FrameImageConfig"):
        E.get(str(bad))
    bad.write_text("family: timm_image\nname: b2\nconfig: {model: test_vit, fps: fast}\n")
    with pytest.raises(ValueError, match=r"b\.yaml: config\.fps: expected a number, got 'fast'"):
        E.get(str(bad))


def test_backbone_yaml_path_is_an_extractor_name(tmp_path, monkeypatch):
    f = tmp_path / "my_vit.yaml"
    f.write_text("family: timm_image\nconfig: {model: test_vit, fps: 2.0, window_frames: 2, stride_frames: 2}\n")
    cls = E.get(str(f))
    assert cls.name == "my_vit" and cls.make_config("full").model == "test_vit"
    monkeypatch.setenv("AVEL_BACKBONES", str(tmp_path))
    assert "my_vit" in E.list_extractors() and E.get("my_vit").name == "my_vit"


def test_hf_audio_clap_backbone_file_matches_get_audio_features():
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    ext = E.get("clap_htsat_unfused").random_init(preset="tiny")
    ref = ClapModel(ClapConfig(**ext.config.architecture)).eval()
    ref.load_state_dict(ext.model.state_dict(), strict=True)
    fe = ClapFeatureExtractor(sampling_rate=16000, **ext.config.processor)
    wave = _wave()
    bounds = ext.plan.window_bounds(ext.plan.num_rows(wave.shape[0]))
    with torch.no_grad():
        inputs = fe([wave[int(s) : int(e)].numpy() for s, e in bounds], sampling_rate=16000, return_tensors="pt")
        out = ref.get_audio_features(**inputs)
        expected = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert _max_diff(_rows(ext, wave), expected) <= TOL
    assert ext.feature_shape == (16,)


def test_weights_verify_cli_on_a_backbone_file(tmp_path):
    from click.testing import CliRunner

    from avel.cli.main import cli

    ext = E.get("timm_vit_b16").random_init(preset="tiny")
    torch.save(ext.model.state_dict(), tmp_path / "vit.pth")
    res = CliRunner().invoke(
        cli, ["weights", "verify", str(tmp_path / "vit.pth"), "--extractor", "timm_vit_b16", "--preset", "tiny"]
    )
    assert res.exit_code == 0, res.output
    assert sha256_file(tmp_path / "vit.pth") in res.output and "ok:" in res.output
    res = CliRunner().invoke(cli, ["weights", "verify", str(tmp_path / "vit.pth"), "--extractor", "timm_vit_b16"])
    assert res.exit_code == 1 and "shape mismatches" in res.output  # the full ViT-B/16 expects other shapes
