"""Exit codes chosen by exception type (avel.cli.errors) and YAML python tags refused in one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from avel.cli.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_RUNTIME, EXIT_SIGINT, EXIT_USAGE, Terminated, exit_code_for
from avel.cli.main import cli
from avel.datasets.annotations import AnnotationError
from avel.datasets.config_schema import ConfigError, YamlError, parse_yaml, read_yaml
from avel.datasets.store import StoreError
from avel.pipeline.decode import DecodeError
from avel.training.distributed import DistributedTrainingError
from avel.training.trainer import CheckpointError

EVIL_YAML = "task: dense\noptim:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n"


@pytest.mark.parametrize(
    "exc, code",
    [
        (ConfigError("x"), EXIT_USAGE),
        (YamlError("x"), EXIT_USAGE),
        (AnnotationError("a.txt: line 3"), EXIT_INPUT),
        (StoreError("s"), EXIT_INPUT),
        (CheckpointError("c"), EXIT_INPUT),
        (DecodeError("v"), EXIT_INPUT),
        (FileNotFoundError("f"), EXIT_INPUT),
        (ValueError("v"), EXIT_INPUT),
        (KeyError("k"), EXIT_INPUT),
        (DistributedTrainingError("d"), EXIT_RUNTIME),
        (MemoryError(), EXIT_RUNTIME),
        (KeyboardInterrupt(), EXIT_SIGINT),
        (Terminated(), 143),
        (RuntimeError("bug"), EXIT_INTERNAL),
        (TypeError("bug"), EXIT_INTERNAL),
    ],
)
def test_exit_code_follows_the_exception_type(exc, code):
    assert exit_code_for(exc) == code


def test_ray_errors_are_runtime_failures():
    ray_exceptions = pytest.importorskip("ray.exceptions")
    assert exit_code_for(ray_exceptions.RaySystemError("gcs down")) == EXIT_RUNTIME


@pytest.mark.parametrize(
    "text", [EVIL_YAML, "a: !!python/name:os.system\n", "a: !!python/object:os.Foo {}\n", "a: !custom 3\n"]
)
def test_yaml_tags_are_refused_with_file_and_line(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text.replace("{marker}", str(tmp_path / "pwned")))
    with pytest.raises(YamlError) as err:
        read_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line ") and "\n" not in message and "tag" in message
    assert not (tmp_path / "pwned").exists()


def test_yaml_errors_name_line_and_bom_is_tolerated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(YamlError, match=r"c.yaml: line 3 column 1: invalid YAML"):
        read_yaml(path)
    path.write_bytes("\ufeffa: 1\n".encode())
    assert read_yaml(path) == {"a": 1}
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(YamlError, match="cannot read as UTF-8"):
        read_yaml(path)
    path.write_text("a: 1\n" * 60000)  # 300 KB: refused before parsing
    with pytest.raises(YamlError, match="c.yaml: 300000 bytes, more than the 262144 a config file may have"):
        read_yaml(path)
    with pytest.raises(YamlError, match="--set x: line 1"):
        parse_yaml("!!python/name:os.system", source="--set x")


def test_train_and_extract_refuse_python_tags_in_one_line(tmp_path):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(EVIL_YAML.replace("{marker}", str(tmp_path / "pwned")))
    (tmp_path / "store").mkdir()
    (tmp_path / "ann.json").write_text("{}")

    def train(*extra: str):
        args = ["--config", str(cfg), "--store", str(tmp_path / "store"), "--annotations", str(tmp_path / "ann.json")]
        return CliRunner().invoke(cli, ["train", *args, "--out", str(tmp_path / "run"), *extra])

    res = train()
    assert res.exit_code == EXIT_USAGE and f"{cfg}: line 3 column" in res.output and "python" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["extract", "--config", str(cfg), "--videos", str(tmp_path)])
    assert res.exit_code == EXIT_USAGE and f"{cfg}: line 3 column" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = train("--set", "optim.epochs=!!python/name:os.system")
    assert res.exit_code == EXIT_USAGE and "--set optim.epochs: line 1" in res.output
    assert not (tmp_path / "pwned").exists()


def test_extract_exit_codes_by_type(tmp_path):
    (tmp_path / "v").mkdir()
    base = [
        "extract",
        "--videos",
        str(tmp_path / "v"),
        "--extractors",
        "vggish",
        "--random-weights",
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "s"),
    ]
    res = CliRunner().invoke(cli, [*base, "--dataset", "ave"])  # no --annotations
    assert res.exit_code == EXIT_USAGE and "--annotations is required" in res.stderr
    res = CliRunner().invoke(
        cli,
        [
            "extract",
            "--videos",
            str(tmp_path / "v"),
            "--dataset",
            "folder",
            "--extractors",
            "nope",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert res.exit_code == EXIT_USAGE and "unknown extractor 'nope'" in res.stderr
    ann = tmp_path / "Annotations.txt"
    ann.write_text("Church bell&abc&good&0\n")
    res = CliRunner().invoke(cli, [*base, "--dataset", "ave", "--annotations", str(ann)])
    assert res.exit_code == EXIT_INPUT and f"{ann}: line 1" in res.stderr
    assert "Traceback" not in res.output
