"""How long an interrupted ``avel extract --runner ray`` and its Ray processes take to go.

Writes ``--videos`` tiny synthetic videos, starts ``avel extract --runner ray --json`` in its
own session, waits until the embedded Ray instance runs (a ``raylet`` in the command's process
tree), lets the run go ``--after-s`` seconds, then sends ``--signal`` (INT, TERM or KILL) to the
command. Every process that appeared in its tree is watched (Ray's processes are children of
the command until it exits). Prints, per trial: the command's exit code, seconds from the
signal to the command's exit, and seconds from the signal until the last process of the tree
was gone (``linger_s``), plus which processes it listened with (loopback only, Linux).

    python benchmarks/ray_interrupt.py --signal TERM --trials 3
    python benchmarks/ray_interrupt.py --signal INT --trials 3

Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def children_map() -> dict[int, list[int]]:
    """``{ppid: [pid, ...]}`` of every live process."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            kids.setdefault(int(fields[1]), []).append(int(d))
    return kids


def process_tree(root: int) -> set[int]:
    """``root`` and its live descendants."""
    kids = children_map()
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += kids.get(pid, [])
    return out


def start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def cmdline(pid: int) -> list[bytes]:
    """The command line of ``pid`` as it shows it now (Ray retitles an actor's worker
    ``ray::ClassName.method``); empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def process_name(pid: int) -> str:
    """``comm``, and for a Python process the script or module it runs."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
    argv = cmdline(pid)
    if comm.startswith("python") and len(argv) > 1:
        script = next((a.decode(errors="replace") for a in argv[1:] if a and not a.startswith(b"-")), "")
        return f"{comm} {Path(script).name}" if script else comm
    return comm


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """``(ip, port, pid)`` of every TCP socket in LISTEN state owned by ``pids``."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    out = []
    for family, name in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            ip_hex, port_hex = f[1].split(":")
            raw = bytes.fromhex(ip_hex)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # per 32-bit word, little endian
            out.append((socket.inet_ntop(family, raw), int(port_hex, 16), inodes[f[9]]))
    return out


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1" or ip.startswith("::ffff:127.")


def make_videos(root: Path, n: int) -> Path:
    from avel.datasets.synth import SynthConfig, generate

    generate(
        SynthConfig(kind="unav100", videos=n, seed=3, size=64, min_duration_s=2.0, max_duration_s=4.0, num_classes=3),
        root,
    )
    return root / "videos"


def committed_videos(store: Path) -> int:
    """Videos committed to the feature store at ``store`` (0 before it exists)."""
    from avel.datasets.store import FeatureStore
    from avel.datasets.store_log import StoreError

    try:
        return len(FeatureStore(store))
    except StoreError:
        return 0


def _sigint_as_in_a_terminal() -> None:
    """In the child, before exec: SIGINT back to its default action. A command started from a
    background job of a non-interactive shell (``make test &``) inherits SIGINT ignored, and
    Python then keeps ignoring it; a command typed in a terminal gets Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_trial(
    videos: Path,
    out: Path,
    *,
    sig: int,
    after_s: float = 3.0,
    after_videos: int = 0,
    timeout_s: float = 180.0,
    extra_args: tuple[str, ...] = (),
) -> dict:
    """One run of ``avel extract --runner ray --json`` interrupted by ``sig`` (see the module doc).

    ``after_videos``: the signal waits, besides ``after_s`` seconds of running Ray, until that
    many videos are committed to the store (:func:`committed_videos`): a point inside the run on
    a fast machine and a slow one alike (a job file with ``shard_max_videos: 1`` in
    ``extra_args`` commits every video)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "avel.cli.main",
        "extract",
        "--dataset",
        "folder",
        "--videos",
        str(videos),
        "--extractors",
        "vggish",
        "--preset",
        "tiny",
        "--random-weights",
        "--runner",
        "ray",
        "--json",
        "--decode-workers",
        "1",
        "--actors-per-extractor",
        "1",
        "--threads-per-actor",
        "1",
        "--out",
        str(out),
        *extra_args,
    ]
    names: dict[int, str] = {}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    seen: dict[int, int] = {}  # pid -> start time
    t0 = time.monotonic()
    sockets: list = []
    ray_up = None
    while proc.poll() is None and time.monotonic() - t0 < timeout_s:
        tree = process_tree(proc.pid)
        for pid in tree:
            st = start_time(pid)
            if st is not None:
                seen.setdefault(pid, st)
                names.setdefault(pid, process_name(pid))
        if ray_up is None and any(process_name(p) == "raylet" for p in tree):
            ray_up = time.monotonic()
        if ray_up is not None and time.monotonic() - ray_up >= after_s and committed_videos(out) >= after_videos:
            sockets = listening_sockets(tree)
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        stdout, stderr = proc.communicate()
        raise RuntimeError(f"the run ended before it was interrupted (exit {proc.returncode}): {stderr[-2000:]!r}")
    os.kill(proc.pid, sig)
    t_sig = time.monotonic()
    exited_s = None
    gone_s: dict[int, float] = {}  # pid -> seconds after the signal it was gone
    while time.monotonic() - t_sig < timeout_s:
        if exited_s is None:
            for pid in process_tree(proc.pid):
                st = start_time(pid)
                if st is not None:
                    seen.setdefault(pid, st)
                    names.setdefault(pid, process_name(pid))
            if proc.poll() is not None:
                exited_s = time.monotonic() - t_sig
        alive = [p for p, st in seen.items() if start_time(p) == st]
        if exited_s is not None and not alive:
            break
        time.sleep(0.1)
        for p, st in seen.items():
            if p not in gone_s and start_time(p) != st:
                gone_s[p] = round(time.monotonic() - t_sig, 2)
    linger_s = time.monotonic() - t_sig
    alive = sorted({process_name(p) for p, st in seen.items() if start_time(p) == st})
    stdout, stderr = proc.communicate(timeout=30)
    return {
        "signal": signal.Signals(sig).name,
        "exit_code": proc.returncode,
        "exit_s": round(exited_s or -1, 2),
        "linger_s": round(linger_s, 2),
        "processes_seen": len(seen),
        "gone_s": sorted((s, names.get(p, "?")) for p, s in gone_s.items()),
        "still_alive": alive,
        "listening": [(ip, port, process_name(pid)) for ip, port, pid in sockets],
        "stdout": stdout.decode(errors="replace")[-500:],
        "stderr_tail": stderr.decode(errors="replace")[-800:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signal", default="TERM", choices=["INT", "TERM", "KILL"])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--after-s", type=float, default=3.0, help="seconds of running Ray before the signal")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_videos(Path(tmp) / "data", args.videos)
        trials = [
            interrupt_trial(
                videos, Path(tmp) / f"store{i}", sig=getattr(signal, f"SIG{args.signal}"), after_s=args.after_s
            )
            for i in range(args.trials)
        ]
    for t in trials:
        t.pop("stdout"), t.pop("stderr_tail")
    print(
        json.dumps(
            {
                "trials": trials,
                "linger_s": {"min": min(t["linger_s"] for t in trials), "max": max(t["linger_s"] for t in trials)},
                "all_loopback": all(is_loopback(ip) for t in trials for ip, _, _ in t["listening"]),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
