"""Entry point of the ``avel`` command: a thin click group over library functions.

Each command lives in its own module of ``avel.cli`` and is registered in ``_COMMANDS``
(module name, attribute). Modules are imported lazily so ``avel --help`` stays fast and a
command's heavy imports (torch, ray) load only when it runs.

An exception escaping a command becomes ``error: <message>`` on stderr and the exit code
:func:`avel.cli.errors.exit_code_for` maps its type to (a traceback only for internal errors);
SIGTERM is turned into an exception like Ctrl-C, so cleanup (Ray shutdown) runs on both.
"""

from __future__ import annotations

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


def main() -> None:
    """The ``avel`` console entry point: SIGTERM raises like SIGINT, then the click group runs."""
    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, _on_sigterm)
        # read when Ray is imported: its C++ failure handler would otherwise take SIGTERM from
        # ours and abort the driver, skipping the shutdown (avel.pipeline.cluster)
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        cli()
    except SystemExit as e:
        if e.code not in (130, 143):
            raise
        # interrupted: the run's cleanup (Ray shutdown, store flush) has happened; skip the
        # interpreter teardown, where Ray's native threads crashed (SIGSEGV) after a Ctrl-C
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code)


if __name__ == "__main__":
    main()
