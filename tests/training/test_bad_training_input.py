"""`avel train` on bad input (issue 14): an empty validation split is refused, NaN / Inf rows
name the video and stream; both exit 3 with one line, no traceback."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from avel.cli.main import cli
from avel.datasets.annotations import AnnotationSet, Sample, Segment
from avel.datasets.checks import NonFiniteRowsError
from avel.datasets.sampling import UNAV100_I3D, UNAV100_VGGISH
from avel.datasets.store import FeatureStore, StoreWriter, StreamSpec
from avel.datasets.torch_dataset import DenseFeatureDataset, stream_statistics
from avel.datasets.unav100 import write_unav100

CFG = {
    "task": "dense",
    "tensorboard": False,
    "model": {
        "name": "unav",
        "options": {"encoder": {"embed_dim": 16, "num_heads": 2}, "tdm": {"class_dim": 4}, "head": {"head_dim": 16}},
    },
    "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
    "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 2},
}


def _data(root, subsets):
    """Videos v0.. (30 rows of rgb 12-d and vggish 8-d) with one event each."""
    rng = np.random.default_rng(0)
    specs = {"rgb": StreamSpec("i3d_rgb", UNAV100_I3D, (12,)), "vggish": StreamSpec("vggish", UNAV100_VGGISH, (8,))}
    samples = []
    with StoreWriter(root / "store", dataset="unav100", streams=specs) as w:
        for i, subset in enumerate(subsets):
            w.add(f"v{i}", {"rgb": rng.standard_normal((30, 12)), "vggish": rng.standard_normal((30, 8))})
            samples.append(Sample(f"v{i}", f"v{i}", 10.0, subset, [Segment(1.0, 3.0, "a", 0)]))
    write_unav100(AnnotationSet("unav100", ["a"], samples), root / "ann.json")
    (root / "cfg.yaml").write_text(yaml.safe_dump(CFG))
    return root


def _poison(monkeypatch, video, stream, value):
    """Reads of ``video``/``stream`` return a row holding ``value`` (as a store written by another
    tool, with valid checksums, would: avel's writer refuses such rows)."""
    real = FeatureStore.read

    def read(self, video_id, name, *args, **kwargs):
        rows = np.array(real(self, video_id, name, *args, **kwargs))
        if (video_id, name) == (video, stream):
            rows[5, 3] = value
        return rows

    monkeypatch.setattr(FeatureStore, "read", read)


def _train(root, out):
    return CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(root / "cfg.yaml"),
            "--store",
            str(root / "store"),
            "--annotations",
            str(root / "ann.json"),
            "--out",
            str(out),
        ],
    )


def test_empty_validation_split_is_refused(tmp_path):
    root = _data(tmp_path, ["train", "train", "test"])
    res = _train(root, tmp_path / "run")
    assert res.exit_code == 3, res.output
    assert f"{root / 'ann.json'}: no samples in subset 'validation' (data.val_subset)" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_name_video_and_stream(tmp_path, monkeypatch, value):
    root = _data(tmp_path, ["train", "train", "validation", "test"])
    _poison(monkeypatch, "v2", "vggish", value)
    res = _train(root, tmp_path / "run")
    assert res.exit_code == 3, res.output
    assert "video 'v2', stream 'vggish': 1 of 30 rows hold NaN or Inf (first: row 5)" in res.output
    assert "index out of bounds" not in res.output and "Traceback" not in res.output


def test_readers_refuse_non_finite_rows(tmp_path, monkeypatch):
    root = _data(tmp_path, ["train", "validation"])
    _poison(monkeypatch, "v1", "rgb", np.nan)
    from avel.datasets.unav100 import load_unav100

    ann = load_unav100(root / "ann.json")
    ds = DenseFeatureDataset(
        root / "store", ann, subset="validation", visual_streams=["rgb"], audio_streams=["vggish"], max_seq_len=64
    )
    with pytest.raises(NonFiniteRowsError, match=r"store: video 'v1', stream 'rgb'"):
        ds[0]
    with pytest.raises(NonFiniteRowsError, match="video 'v1', stream 'rgb'"):
        stream_statistics(FeatureStore(root / "store"), ["v0", "v1"], ["rgb"])
