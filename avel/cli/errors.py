"""Exit codes of the ``avel`` command, chosen by exception type (see docs/failure-modes.md).

=====  =====================================================================================
code   meaning
=====  =====================================================================================
0      success
1      the job ran and found problems: videos failed (recorded in ``errors.jsonl``),
       ``avel validate`` / ``avel info --verify`` found errors
2      usage: a bad flag, a missing or invalid option, an invalid config / job file (YAML,
       unknown key, wrong type)
3      bad input data: an annotation file, store, checkpoint, weights file or video that
       cannot be used (the message names the file and the line / key / video)
4      the runtime failed: Ray could not start or lost its workers, distributed training failed
70     internal error (a bug: the traceback is printed; please report it)
130    interrupted (SIGINT, Ctrl-C); 143: terminated (SIGTERM). Ray and worker processes
       started by the command are shut down first
=====  =====================================================================================

Every command runs under :class:`avel.cli.main` 's group, which turns an escaping exception
into ``error: <message>`` on stderr and the code from :func:`exit_code_for`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_RUNTIME = 4
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler of the ``avel`` command, so ``finally``
    blocks (Ray shutdown, writer flush) run as for Ctrl-C."""


def _runtime_types() -> tuple[type, ...]:
    types: list[type] = [MemoryError]
    try:
        from avel.training.distributed import DistributedTrainingError

        types.append(DistributedTrainingError)
    except ImportError:
        pass
    from avel.pipeline.cluster import ray_error_types  # Ray stays in the orchestration code

    types.extend(ray_error_types())
    return tuple(types)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception escaping a command (the table in the module doc).

    Usage errors (:class:`~avel.datasets.config_schema.ConfigError`) are checked before the
    input errors they subclass (``ValueError``); any other ``ValueError``, ``KeyError`` or
    ``OSError`` comes from reading input and counts as bad input; anything else is a bug.
    """
    from avel.datasets.config_schema import ConfigError

    for cause in _chain(exc):  # a signal may surface wrapped (a SystemError from Ray's C code)
        if isinstance(cause, KeyboardInterrupt):
            return EXIT_SIGINT
        if isinstance(cause, Terminated):
            return EXIT_SIGTERM
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, _runtime_types()):
        return EXIT_RUNTIME
    from avel.datasets.store import StoreError

    if isinstance(exc, (StoreError, ValueError, KeyError, OSError, RuntimeError)) and _is_input_error(exc):
        return EXIT_INPUT
    return EXIT_INTERNAL


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _is_input_error(exc: BaseException) -> bool:
    """ValueError / KeyError / OSError / StoreError and the decoder's errors are about input;
    a bare RuntimeError is not (torch raises those for bugs)."""
    if isinstance(exc, RuntimeError):
        from avel.pipeline.decode import DecodeError

        return isinstance(exc, DecodeError)
    return True


def message_for(exc: BaseException) -> str:
    """One line for stderr: the exception's message (a KeyError's without the quotes)."""
    interrupt = next((c for c in _chain(exc) if isinstance(c, (KeyboardInterrupt, Terminated))), None)
    if interrupt is not None:
        return "interrupted (SIGINT)" if isinstance(interrupt, KeyboardInterrupt) else "terminated (SIGTERM)"
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc) or type(exc).__name__
    return text
