"""Data-parallel training (2 CPU workers on an embedded Ray, gloo) against single-process training.

What must hold for the loss curves to agree: every step the union of the ranks' samples is the
single-process global batch with the same random crops (same sampler, crops from (seed, epoch,
index)); the dense loss is sum / EMA(#positives), so the normaliser must follow the GLOBAL
number of positives (all-reduced) and be scaled by the rank's share of the batch, and the
trainer weighs rank r's loss by N * b_r / b, which turns the DDP gradient average into the
single-process gradient, even for a batch of 3 split 2 + 1; dropout is off (per-rank dropout masks
cannot match single-process ones). What is left is floating-point summation order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch.utils.data import Dataset

from avel.cli.main import cli
from avel.datasets.store import FeatureStore
from avel.training.config import ConfigError, config_from_dict
from avel.training.run import fit_and_test, train
from avel.training.trainer import Trainer, shard_bounds

# Tolerances of the 2-worker run against the single-process one. The computation is the same up
# to summation order (per-rank partial sums all-reduced instead of one batch sum); measured over
# 9 steps: losses within 1.8e-6 relative, parameters within 2.1e-6 relative (L2 over all of them).
# A per-rank loss normaliser (each rank's own EMA of its positives) is off by ~0.5 relative.
# Single parameters can differ by up to ~lr per step: Adam's m / sqrt(v) turns rounding noise on
# a near-zero gradient into an update of size ~lr (measured: 1.6e-5 with lr 1e-3).
LOSS_RTOL = 2e-5
PARAM_RTOL = 1e-4

NO_DROPOUT = {"path_pdrop": 0.0, "attn_pdrop": 0.0, "proj_pdrop": 0.0}
CONFIG = {
    "task": "dense",
    "seed": 3,
    "tensorboard": False,
    "log_every_steps": 1,
    "model": {
        "name": "unav",
        "options": {
            "encoder": {"embed_dim": 16, "num_heads": 2, **NO_DROPOUT},
            "pyramid": NO_DROPOUT,
            "tdm": {"class_dim": 4, "path_pdrop": 0.0},
            "head": {"head_dim": 16},
        },
    },
    "data": {"visual_streams": ["rgb"], "audio_streams": ["vggish"], "max_seq_len": 64},
    # constant LR after one warmup epoch: a 3-epoch run and a 2-epoch run resumed to 3 share it
    "optim": {
        "epochs": 3,
        "warmup_epochs": 1,
        "batch_size": 4,
        "lr": 1e-3,
        "schedule": "step",
        "step_size_steps": 1000,
        "ema_decay": 0.9,
    },
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dense):
    """11 train videos (global batches of 4, 4, 3: the last one splits 2 + 1 over two workers),
    4 validation, 4 test; 20-40 rows each."""
    return tiny_dense(
        tmp_path_factory.mktemp("dist"), seed=5, subsets=["train"] * 11 + ["validation"] * 4 + ["test"] * 4
    )


def _record_digest(trainer: Trainer, folder: str) -> None:
    """on_step hook: sha256 of every parameter's bytes, one JSON line per step and rank."""
    h = hashlib.sha256()
    for p in trainer.model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    with open(f"{folder}/rank{trainer.rank}.jsonl", "a") as f:
        f.write(json.dumps({"step": trainer.step, "digest": h.hexdigest()}) + "\n")


def _train_steps(run) -> dict[int, dict]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if r["kind"] == "train"}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the on_step hook travels by value
    # Ray Train gives a worker group 60 s to start; on a busy 2-core machine that can be too short
    key, before = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S")
    os.environ[key] = "600"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop(key)
    else:
        os.environ[key] = before


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory, ray_cluster):
    """A 3-epoch single-process run and a 2-epoch run on 2 workers, same config and global batch."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(store=data / "store", annotations=data / "ann.json")
    single = train(config_from_dict(CONFIG), out=root / "single", **common)
    (root / "digests").mkdir()
    cfg = config_from_dict({**CONFIG, "optim": {**CONFIG["optim"], "epochs": 2}, "distributed": {"workers": 2}})
    hook = functools.partial(_record_digest, folder=str(root / "digests"))
    ddp = train(cfg, out=root / "ddp", on_step=hook, **common)
    return {"root": root, "single": single, "ddp": ddp}


@pytest.mark.slow  # Ray Train runs
def test_workers_keep_identical_parameters_after_every_step(runs):
    folder = runs["root"] / "digests"
    per_rank = [[json.loads(line) for line in (folder / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [r["step"] for r in per_rank[0]] == [1, 2, 3, 4, 5, 6]  # 2 epochs x 3 global batches
    assert per_rank[0] == per_rank[1]
    assert len({r["digest"] for r in per_rank[0]}) == 6  # the parameters did change every step


@pytest.mark.slow  # Ray Train runs
def test_loss_curve_matches_single_process_with_the_same_global_batch(runs):
    single, ddp = _train_steps(runs["root"] / "single"), _train_steps(runs["root"] / "ddp")
    assert sorted(ddp) == [1, 2, 3, 4, 5, 6]
    for step in ddp:  # steps 3 and 6 split their batch of 3 unevenly (2 + 1)
        for key in ("total", "cls", "reg", "lr"):
            assert ddp[step][key] == pytest.approx(single[step][key], rel=LOSS_RTOL), (step, key)
    assert ddp[6]["total"] != pytest.approx(ddp[1]["total"], rel=1e-3)  # a curve, not a constant
    a = torch.load(runs["root"] / "ddp" / "last.pt", weights_only=False)
    assert set(a["model"]) == set(torch.load(runs["root"] / "single" / "last.pt", weights_only=False)["model"])
    assert not any(k.startswith("module.") for k in a["model"])  # unwrapped: single-process format


@pytest.mark.slow  # Ray Train runs
def test_run_directory_matches_single_process_layout_and_avel_eval_reads_it(runs, data):
    ddp = runs["root"] / "ddp"
    for name in (
        "config.yaml",
        "last.pt",
        "best.pt",
        "log.jsonl",
        "summary.json",
        "predictions_validation.json",
        "metrics_validation.json",
        "predictions_test.json",
        "metrics_test.json",
    ):
        assert (ddp / name).is_file(), name
    summary = runs["ddp"]
    assert summary == json.loads((ddp / "summary.json").read_text())
    assert summary["best_epoch"] in (1, 2) and 0.0 <= summary["test"]["average_mAP"] <= 1.0
    epochs = [
        json.loads(line) for line in (ddp / "log.jsonl").read_text().splitlines() if json.loads(line)["kind"] == "epoch"
    ]
    assert [e["epoch"] for e in epochs] == [1, 2] and all("val_score" in e for e in epochs)
    preds = json.loads((ddp / "predictions_test.json").read_text())["results"]
    assert set(preds) == {"-v15", "-v16", "-v17", "-v18"}  # every test video, from both ranks' shards
    res = CliRunner().invoke(cli, ["eval", "--run", str(ddp), "--annotations", str(data / "ann.json"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{") :])["average_mAP"] == pytest.approx(
        summary["test"]["average_mAP"], abs=1e-9
    )


@pytest.mark.slow  # Ray Train runs
def test_distributed_evaluation_equals_single_process_evaluation(runs, data, tmp_path):
    """The 2-worker checkpoint resumed in one process (nothing left to train) re-evaluates
    best.pt on the test split in one piece: same metrics as the sharded evaluation."""
    copy = tmp_path / "copy"
    shutil.copytree(runs["root"] / "ddp", copy)
    cfg = config_from_dict({**CONFIG, "optim": {**CONFIG["optim"], "epochs": 2}})
    summary = fit_and_test(cfg, store=data / "store", annotations=data / "ann.json", out=copy, resume=copy / "last.pt")
    for key, value in runs["ddp"]["test"].items():
        assert summary["test"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow  # Ray Train runs
def test_cli_resumes_a_two_worker_run_on_two_workers(runs, data, tmp_path):
    """`avel train --workers 2 --resume`: one more epoch continues the single-process curve."""
    run = tmp_path / "ddp"
    shutil.copytree(runs["root"] / "ddp", run)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))  # 3 epochs: one left after the 2-epoch run
    args = [
        "train",
        "--config",
        str(cfg_file),
        "--store",
        str(data / "store"),
        "--annotations",
        str(data / "ann.json"),
        "--out",
        str(run),
        "--workers",
        "2",
    ]
    res = CliRunner().invoke(cli, args + ["--resume", str(run / "last.pt")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["best_epoch"] in (1, 2, 3) and "test" in summary
    assert '"epoch": 3' in res.stderr  # progress followed from rank 0's log on the driver
    single, ddp = _train_steps(runs["root"] / "single"), _train_steps(run)
    assert sorted(ddp) == list(range(1, 10))
    for step in (7, 8, 9):
        assert ddp[step]["total"] == pytest.approx(single[step]["total"], rel=LOSS_RTOL), step
    a = torch.load(run / "last.pt", weights_only=False)
    b = torch.load(runs["root"] / "single" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 9
    assert a["model"]["loss_normalizer.value"] == pytest.approx(float(b["model"]["loss_normalizer.value"]), rel=1e-12)
    for state in ("model", "ema"):
        fa, fb = (torch.cat([ckpt[state][k].double().flatten() for k in sorted(b[state])]) for ckpt in (a, b))
        assert float((fa - fb).norm() / fb.norm()) < PARAM_RTOL, state
        assert float((fa - fb).abs().max()) < CONFIG["optim"]["lr"], state


def test_global_batch_must_split_evenly(data, tmp_path):
    with pytest.raises(
        ConfigError, match="batch_size 4 is the global batch and must be divisible by distributed.workers 3"
    ):
        config_from_dict({**CONFIG, "distributed": {"workers": 3}})
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(cfg_file),
            "--store",
            str(data / "store"),
            "--annotations",
            str(data / "ann.json"),
            "--out",
            str(tmp_path / "r"),
            "--workers",
            "3",
        ],
    )
    assert res.exit_code == 2 and "divisible by distributed.workers 3" in res.output
    with pytest.raises(ConfigError, match=r"cluster: unknown key\(s\) \['adress'\]"):
        config_from_dict({"cluster": {"adress": "auto"}})


class _Indices(Dataset):
    def __len__(self) -> int:
        return 11

    def __getitem__(self, i: int) -> int:
        return i


class _IndexTask:
    name = "indices"

    def collate(self, ds):
        return list


def test_rank_shares_reassemble_the_single_process_batches(tmp_path):
    """No Ray: the order every rank derives is the one the single-process loader yields, and
    the ranks' contiguous shares put each global batch back together."""
    cfg = config_from_dict({"seed": 7, "tensorboard": False, "optim": {"batch_size": 4}})
    trainer = Trainer(
        cfg,
        task=_IndexTask(),
        model=torch.nn.Linear(1, 1),
        model_spec={"name": "x", "options": {}},
        datasets={"train": _Indices()},
        out_dir=tmp_path,
    )
    for epoch in (0, 1):
        single = [list(b) for b in trainer.loader("train", shuffle=True, epoch=epoch)]
        assert trainer.global_batches(epoch) == single and len(single) == 3  # 4 + 4 + 3
        for batch in single:
            parts = [batch[slice(*shard_bounds(len(batch), r, 2))] for r in range(2)]
            assert parts[0] + parts[1] == batch and abs(len(parts[0]) - len(parts[1])) <= 1
    assert trainer.global_batches(0) != trainer.global_batches(1)


@pytest.fixture(scope="module")
def ave_data(tmp_path_factory, tiny_ave):
    """10 AVE rows: 3 validation rows for sharding over two ranks (2 + 1)."""
    return tiny_ave(tmp_path_factory.mktemp("ave"), seed=2, subsets=["train"] * 7 + ["validation"] * 3)


@pytest.mark.parametrize(
    "task,model,options",
    [("dense", "unav", CONFIG["model"]["options"]), ("ave", "agva", {}), ("ave", "ccln", {"setting": "cml"})],
)
def test_sharded_evaluation_equals_whole_split_evaluation(data, ave_data, task, model, options):
    """No Ray: Task.score over the collect() results of two contiguous shards gives the metrics
    and predictions of Task.evaluate on the whole split (what distributed evaluation relies on)."""
    from avel.models.registry import build_model
    from avel.training.run import load_annotations, make_task, resolve_model_options

    root, ann = (data, data / "ann.json") if task == "dense" else (ave_data, ave_data / "Annotations.txt")
    cfg = config_from_dict(
        {
            **CONFIG,
            "task": task,
            "model": {"name": model, "options": options},
            "data": {
                **CONFIG["data"],
                **(
                    {}
                    if task == "dense"
                    else {
                        "visual_streams": ["vgg19"],
                        "audio_streams": ["vggish"],
                        "ave_split": "match" if options.get("setting") == "cml" else "standard",
                    }
                ),
            },
        }
    )
    t = make_task(cfg, FeatureStore(root / "store"), load_annotations(task, ann, ave_split=cfg.data.ave_split))
    datasets = t.build_datasets(cfg)
    torch.manual_seed(0)
    net = build_model(model, options=resolve_model_options(cfg, t.model_options(cfg, datasets["train"]))).eval()
    ds = datasets["validation"]
    assert len(ds) in (3, 4)  # shards 2 + 1 (AVE) or 2 + 2 (dense); batches of 2 as in the whole split

    def loader(indices):
        return torch.utils.data.DataLoader(torch.utils.data.Subset(ds, indices), batch_size=2, collate_fn=t.collate(ds))

    with torch.no_grad():
        whole = t.evaluate(net, loader(range(len(ds))), torch.device("cpu"), subset="validation")
        parts = [t.collect(net, loader(range(*shard_bounds(len(ds), r, 2))), torch.device("cpu")) for r in (0, 1)]
    sharded = t.score(parts, subset="validation")
    assert sharded == whole  # same batches on both sides: exactly the same numbers
    assert json.dumps(sharded[1]) == json.dumps(whole[1])  # same order in the prediction file too


def test_ray_settings_follow_the_config():
    """No Ray: scaling settings and the local-resources check of the driver."""
    from avel.training.distributed import _check_local_resources, scaling

    cpu = scaling(
        config_from_dict({"distributed": {"workers": 2}, "optim": {"batch_size": 4}, "data": {"num_workers": 1}})
    )
    assert cpu == {"num_workers": 2, "use_gpu": False, "resources_per_worker": {"CPU": 2.0}, "backend": "gloo"}
    gpu = scaling(config_from_dict({"distributed": {"workers": 4, "gpus_per_worker": 0.5, "cpus_per_worker": 3}}))
    assert gpu == {
        "num_workers": 4,
        "use_gpu": True,
        "resources_per_worker": {"CPU": 3.0, "GPU": 0.5},
        "backend": "nccl",
    }
    _check_local_resources(cpu, {"CPU": 4.0})
    with pytest.raises(ConfigError, match="2 workers x 2 CPU exceed the 2 CPU of this machine's local Ray"):
        _check_local_resources(cpu, {"CPU": 2.0})
    with pytest.raises(ConfigError, match="4 workers x 0.5 GPU exceed the 0 GPU"):
        _check_local_resources(gpu, {"CPU": 16.0})
    with pytest.raises(ConfigError, match="backend 'nccl' needs GPUs"):
        config_from_dict({"distributed": {"backend": "nccl"}})
