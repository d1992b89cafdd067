"""`avel train` on a config dict, as the training tests run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from avel.cli.main import cli


def run_train(
    cfg: dict[str, Any], cfg_file: Path, *, store: Path, annotations: Path, out: Path, extra: tuple[str, ...] = ()
) -> Result:
    """Write ``cfg`` to ``cfg_file`` and run ``avel train --config cfg_file --store ... --out out *extra``."""
    cfg_file.write_text(yaml.safe_dump(cfg))
    args = ["train", "--config", str(cfg_file), "--store", str(store), "--annotations", str(annotations)]
    return CliRunner().invoke(cli, [*args, "--out", str(out), *extra])


def ave_config(model: str, options: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    """A one-epoch AVE training config on the vgg19 / vggish streams of the tiny AVE stores."""
    return {
        "task": "ave",
        "tensorboard": False,
        "model": {"name": model, "options": options or {}},
        "data": {"visual_streams": ["vgg19"], "audio_streams": ["vggish"], **data},
        "optim": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4, "lr": 1e-3},
    }
