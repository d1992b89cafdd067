"""The ``avel`` process ends without the interpreter's teardown, losing nothing a normal exit keeps.

``avel.cli.main.main`` ends with ``os._exit`` once a command is done (the teardown of torch cost
about 0.6 s per command). These run the real entry point in a subprocess and check what a normal
exit guarantees: the exit status, everything written to a pipe, the atexit handlers, and a
running non-daemon thread being waited for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from avel.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def _run_main(prelude: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        textwrap.dedent(prelude)
        + f"\nimport sys\nsys.argv = ['avel', *{argv!r}]\nfrom avel.cli.main import main\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_stdout_through_a_pipe_is_complete_and_status_zero():
    done = _run_main("", ["models", "list"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == CliRunner().invoke(cli, ["models", "list"]).output
    assert "unav" in done.stdout.lower()


def test_atexit_handlers_run_and_the_error_status_is_kept(tmp_path):
    marker = tmp_path / "atexit.txt"
    done = _run_main(
        f"""
        import atexit
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        """,
        ["info", str(tmp_path / "no_such_store")],
    )
    assert done.returncode == 2  # click's usage error: the directory does not exist
    assert "does not exist" in done.stderr
    assert marker.read_text() == "ran"


def test_a_running_non_daemon_thread_is_waited_for(tmp_path):
    marker = tmp_path / "thread.txt"
    done = _run_main(
        f"""
        import threading, time
        def late():
            time.sleep(1.0)
            open({str(marker)!r}, "w").write("done")
        threading.Thread(target=late).start()
        """,
        ["models", "list"],
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"
