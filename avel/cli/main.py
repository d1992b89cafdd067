"""Entry point of the ``avel`` command: a thin click group over library functions.

Each command lives in its own module of ``avel.cli`` and is registered in ``_COMMANDS``
(module name, attribute). Modules are imported lazily so ``avel --help`` stays fast and a
command's heavy imports (torch, ray) load only when it runs.
"""
from __future__ import annotations

import importlib

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
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="avel")
def cli() -> None:
    """avel: audio-visual event localization toolkit."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
