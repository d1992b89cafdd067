"""Entry point of the ``avel`` command: a thin click group over library functions.

Each command lives in its own module of ``avel.cli`` and is registered in ``_COMMANDS``
(module name, attribute). Modules are imported lazily so ``avel --help`` stays fast and a
command's heavy imports (torch, ray) load only when it runs.

An exception escaping a command becomes ``error: <message>`` on stderr and the exit code
:func:`avel.cli.errors.exit_code_for` maps its type to (a traceback only for internal errors);
SIGTERM is turned into an exception like Ctrl-C, so cleanup (Ray shutdown) runs on both.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
import traceback

import click

# command name -> (module, attribute holding the click command)
_COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("avel.cli.store", "info"),
    "import": ("avel.cli.store", "import_"),
    "export": ("avel.cli.store", "export"),
    "store": ("avel.cli.store", "store_group"),
    "validate": ("avel.cli.validate", "validate"),
    "extract": ("avel.cli.extract", "extract"),
    "synth": ("avel.cli.synth", "synth"),
    "train": ("avel.cli.train", "train"),
    "demo": ("avel.cli.demo", "demo"),
    "models": ("avel.cli.models", "models"),
    "extractors": ("avel.cli.extractors", "extractors"),
    "weights": ("avel.cli.weights", "weights"),
    "eval": ("avel.cli.eval", "eval_"),
    "plot": ("avel.cli.plot", "plot"),
    "predict": ("avel.cli.predict", "predict"),
    "report": ("avel.cli.predict", "report"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        from avel.cli.errors import Terminated

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except (Exception, KeyboardInterrupt, Terminated) as e:
            from avel.cli.errors import EXIT_INTERNAL, exit_code_for, message_for

            code = exit_code_for(e)
            if code == EXIT_INTERNAL:
                traceback.print_exc()
            click.echo(f"error: {message_for(e)}", err=True)
            ctx.exit(code)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="avel")
def cli() -> None:
    """avel: audio-visual event localization toolkit."""


def _on_sigterm(signum, frame) -> None:
    from avel.cli.errors import Terminated

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated("terminated (SIGTERM)")


def _exit_code(e: SystemExit) -> int:
    """The status the interpreter would exit with for ``e`` (a message goes to stderr as 1)."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _exit_without_teardown(code: int, *, run_atexit: bool = True) -> None:
    """End the process once the command's work is done, skipping the interpreter's teardown.

    Freeing every module of torch at exit took 0.5-1.1 s on the 2-core machine (median 0.61 s
    over 5 runs, against 0.05 s this way): a second of a one-video ``avel extract``. What a
    normal exit does that matters still happens: the ``atexit`` handlers (logging flush, Ray and
    multiprocessing clean-up) unless ``run_atexit`` is false, and stdout / stderr are flushed.
    Files are closed by the commands themselves (stores, reports). The normal exit is kept
    when a non-daemon thread is still running (it waits for it) and under a profiler, tracer
    or debugger (``python -m cProfile``, coverage, pdb write their results after the program).
    """
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(t.is_alive() and not t.daemon for t in others) or sys.getprofile() or sys.gettrace():
        sys.exit(code)
    if run_atexit:
        import atexit

        atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """The ``avel`` console entry point: SIGTERM raises like SIGINT, then the click group runs."""
    # torch's import leaves ~1M long-lived objects: at the default thresholds (700, 10, 10) a
    # one-video `avel extract` ran 375 collections, 3 of them full, for 0.24-0.30 s of its
    # start-up; at 50,000 it runs 5 young ones (0.10 s). Garbage cycles are collected as before,
    # in larger steps.
    gc.set_threshold(50_000, 10, 10)
    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, _on_sigterm)
        # read when Ray is imported: its C++ failure handler would otherwise take SIGTERM from
        # ours and abort the driver, skipping the shutdown (avel.pipeline.cluster)
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        cli()
    except SystemExit as e:
        code = _exit_code(e)
        # interrupted: the run's cleanup (Ray shutdown, store flush) has happened; skip the
        # atexit handlers too, where Ray's native threads crashed (SIGSEGV) after a Ctrl-C
        _exit_without_teardown(code, run_atexit=code not in (130, 143))


if __name__ == "__main__":
    main()
