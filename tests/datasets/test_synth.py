"""The synthetic benchmark writes real, decodable mp4 files whose content matches the annotations."""
from __future__ import annotations

import hashlib
import json

import decord
import numpy as np
import pytest
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.ave import load_ave
from avel.datasets.synth import SynthConfig, generate
from avel.datasets.unav100 import load_unav100

TINY = dict(videos=4, size=64, min_duration_s=3.0, max_duration_s=6.0, num_classes=4)


@pytest.fixture(scope="module")
def unav_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_unav")
    generate(SynthConfig(kind="unav100", seed=3, **TINY), out)
    return out


def _band_power(x: np.ndarray, sr: int, f: float) -> float:
    """Mean power per sample within +-20% of ``f``."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float(spec[np.abs(freqs - f) < 0.2 * f].sum() / len(x))


def test_videos_decode_with_expected_frames_and_audio(unav_dir):
    meta = json.loads((unav_dir / "synth.json").read_text())
    ann = load_unav100(unav_dir / "unav100_annotations.json")
    assert len(ann) == 4 and ann.num_classes == 4
    for s in ann:
        path = unav_dir / "videos" / f"{s.video_id}.mp4"
        vr = decord.VideoReader(str(path))
        assert len(vr) == round(s.duration_s * 25)
        assert vr[0].shape == (64, 64, 3)
        audio = decord.AudioReader(str(path), sample_rate=16000, mono=True)[:].asnumpy()[0]
        assert abs(len(audio) - s.duration_s * 16000) <= 1024
        assert meta["videos"][s.video_id]["duration_s"] == s.duration_s


def test_sound_and_object_present_exactly_where_annotated(unav_dir):
    meta = json.loads((unav_dir / "synth.json").read_text())
    sigs = meta["classes"]
    checked_in = checked_out = 0
    for vid, info in meta["videos"].items():
        path = str(unav_dir / "videos" / f"{vid}.mp4")
        audio = decord.AudioReader(path, sample_rate=16000, mono=True)[:].asnumpy()[0]
        vr = decord.VideoReader(path)
        occ = info["occurrences"]
        for o in occ:
            if not o["labelled"] or o["end_s"] - o["start_s"] < 0.5:
                continue
            sig = sigs[o["class_index"]]
            mid = (o["start_s"] + o["end_s"]) / 2
            a = int((mid - 0.2) * 16000)
            inside = _band_power(audio[a:a + 6400], 16000, sig["freq_hz"])
            checked_in += 1
            # the class's band is >5x louder inside the event than where its sound is off
            # (other classes' sounds lie in other bands)
            quiet = [t for t in np.arange(0.0, info["duration_s"] - 0.4, 0.2)
                     if not any(p["audio"] and p["class_index"] == o["class_index"]
                                and p["start_s"] - 0.3 <= t <= p["end_s"] + 0.1 for p in occ)]
            for t in quiet[:2]:
                b = int(t * 16000)
                assert inside > 5 * _band_power(audio[b:b + 6400], 16000, sig["freq_hz"]), (vid, o, t)
                checked_out += 1
            # the object's colour covers pixels inside the event
            frame = vr[int(mid * 25)].asnumpy().astype(int)
            close = np.abs(frame - np.array(sig["color_rgb"])).sum(-1) < 60
            assert close.sum() > 30, (vid, o)
    assert checked_in >= 3 and checked_out >= 1


def test_deterministic_for_a_seed(tmp_path, unav_dir):
    generate(SynthConfig(kind="unav100", seed=3, **TINY), tmp_path / "again")
    a = (unav_dir / "unav100_annotations.json").read_bytes()
    assert (tmp_path / "again" / "unav100_annotations.json").read_bytes() == a
    vid = load_unav100(unav_dir / "unav100_annotations.json").samples[0].video_id

    def digest(root):
        vr = decord.VideoReader(str(root / "videos" / f"{vid}.mp4"))
        au = decord.AudioReader(str(root / "videos" / f"{vid}.mp4"), sample_rate=16000, mono=True)
        return hashlib.sha256(vr.get_batch(list(range(0, len(vr), 7))).asnumpy().tobytes()
                              + au[:].asnumpy().tobytes()).hexdigest()

    assert digest(tmp_path / "again") == digest(unav_dir)
    generate(SynthConfig(kind="unav100", seed=4, **TINY), tmp_path / "other")
    assert (tmp_path / "other" / "unav100_annotations.json").read_bytes() != a


def test_events_distractors_and_ids(tmp_path):
    cfg = SynthConfig(kind="unav100", seed=0, videos=40, num_classes=10)
    from avel.datasets.synth import plan_dataset

    sigs, plans = plan_dataset(cfg)
    occ = [o for p in plans for o in p.occurrences]
    events = [o for o in occ if o.labelled]
    assert any(not o.audio for o in occ) and any(not o.visual for o in occ)  # single-modality distractors
    assert all(o.visual and o.audio for o in events)
    lengths = [o.end_s - o.start_s for o in events]
    assert min(lengths) < 1.0 and any(abs(o.end_s - o.start_s - p.duration_s) < 1e-6
                                      for p in plans for o in p.occurrences if o.labelled)
    overlapping = sum(1 for p in plans for a in p.occurrences for b in p.occurrences
                      if a is not b and a.labelled and b.labelled and a.start_s < b.end_s and b.start_s < a.end_s)
    assert overlapping > 0
    for p in plans:  # distractors never share a class with an event of the same video
        ev = {o.class_index for o in p.occurrences if o.labelled}
        assert not any(o.class_index in ev for o in p.occurrences if not o.labelled)
    assert any(p.video_id.startswith("-") for p in plans) and any(p.video_id.startswith("_") for p in plans)


def test_ave_format_via_cli(tmp_path):
    res = CliRunner().invoke(cli, ["synth", "ave", "--out", str(tmp_path), "--videos", "6", "--seed", "1",
                                   "--classes", "3", "--size", "64"])
    assert res.exit_code == 0, res.output
    ann = load_ave(tmp_path / "Annotations.txt")
    assert len(ann.video_ids()) == 6 and ann.background_id == ann.num_classes
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["label_ids"] == {c: ann.classes.index(c) for c in meta["label_ids"] if c in ann.classes}
    for s in ann:
        (seg,) = s.segments
        assert float(seg.start_s).is_integer() and float(seg.end_s).is_integer() and 0 <= seg.start_s < seg.end_s <= 10
    vr = decord.VideoReader(str(tmp_path / "videos" / f"{ann.samples[0].video_id}.mp4"))
    assert len(vr) == 250
    assert (tmp_path / "Annotations.txt").read_text().startswith("Category&VideoID&Quality&StartTime&EndTime")
