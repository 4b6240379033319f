"""How every command says no to its user: one line per problem, naming the key or file, the value and the fix;
exit status 2; no traceback (``RECIPES_DEBUG=1``, or ``--debug`` on the command line, adds it for a developer).

The one error path of the repository: :class:`UsageError` (data_prep's ``DataPrepError`` is one) for every user
mistake, and :func:`exit_on_usage_error` around every entry point (``run_hydra_main`` applies the same wrapper
to a Hydra main, for Hydra's own composition errors)."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue, OmegaConfBaseException

EXIT_USAGE = 2  # a mistake in the config or the input files: fix it and run again
EXIT_PREEMPTED = (
    75  # EX_TEMPFAIL from sysexits.h, "try again later": last.ckpt saved on a signal; running again resumes
)
DEBUG_ENV = "RECIPES_DEBUG"  # 1: a usage error also prints its traceback
DEBUG_FLAG = "--debug"


class UsageError(ValueError):
    """A mistake in the user's config or input files, found before any compute (or instead of a crash).
    The message is shown as it is, so it names the key or file, the value, and what to do; several
    mistakes found together are one line each (``UsageError(*problems)``)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))

    @property
    def problems(self) -> list[str]:
        return str(self).splitlines() or [type(self).__name__]


def raise_problems(problems: list[str], error: type[UsageError] = UsageError) -> None:
    """Raise every problem found, one line each, or nothing when there are none."""
    if problems:
        raise error(*problems)


def usage_error_in(err: BaseException) -> UsageError | None:
    """The :class:`UsageError` ``err`` is or wraps (Hydra's ``InstantiationException`` wraps what a constructor
    raised), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UsageError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def problems_of(err: BaseException) -> list[str] | None:
    """The lines to show for a user mistake; None for anything else (a bug: its traceback is what helps)."""
    if isinstance(err, (ConfigCompositionException, OverrideParseException)):
        return [hydra_message(err)]
    if isinstance(err, (MissingMandatoryValue, InterpolationToMissingValueError)):
        return [missing_message(err)]
    usage = usage_error_in(err)
    if usage is not None and (usage is err or isinstance(err, (InstantiationException, OmegaConfBaseException))):
        return usage.problems
    return None


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _report(program: str, problems: list[str]) -> NoReturn:
    if debugging():
        traceback.print_exc()
    for line in problems:
        print(f"{program}: error: {line}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


@contextmanager
def reported(program: str) -> Iterator[None]:
    """A user mistake raised inside becomes ``<program>: error: <problem>`` per problem on stderr, exit status 2."""
    try:
        yield
    except Exception as err:
        problems = problems_of(err)
        if problems is None:
            raise
        _report(program, problems)


@contextmanager
def building(key: str, value: object = None) -> Iterator[None]:
    """Whatever a library raises while the run is built from config ``key`` (a model restored, an optimizer, a
    loader, a callback, a logger) becomes one :class:`UsageError` naming the key; ``RECIPES_DEBUG=1`` still shows
    the library's traceback (chained)."""
    try:
        yield
    except UsageError:
        raise
    except Exception as err:
        usage = usage_error_in(err)  # e.g. our own check, wrapped in Hydra's InstantiationException
        if usage is not None:
            raise usage from err
        shown = key if value is None else f"{key}={value}"
        raise UsageError(
            f"{shown}: building the run from it failed ({type(err).__name__}: {first_line(err)}): fix {key} "
            f"(RECIPES_DEBUG=1 shows the traceback)"
        ) from err


def abort(program: str, problems: list[str]) -> NoReturn:
    """Report ``problems`` as :func:`exit_on_usage_error` does and end the process at once, from any thread (a
    watchdog's: the main thread may be stuck where no exception reaches it)."""
    for line in problems:
        print(f"{program}: error: {line}", file=sys.stderr, flush=True)
    os._exit(EXIT_USAGE)


def exit_on_usage_error(program: str):
    """Decorate an entry point (a plain ``main`` or a Hydra task function): every user mistake it raises ends as
    one line per problem on stderr and exit status 2, without a traceback. ``--debug`` among the command-line
    arguments (``sys.argv``, or an argument list handed to ``main``) is taken out and sets ``RECIPES_DEBUG=1``."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            if DEBUG_FLAG in sys.argv or any(isinstance(a, list) and DEBUG_FLAG in a for a in args):
                sys.argv = [a for a in sys.argv if a != DEBUG_FLAG]
                args = tuple([x for x in a if x != DEBUG_FLAG] if isinstance(a, list) else a for a in args)
                os.environ[DEBUG_ENV] = "1"
            with reported(program):
                return main(*args, **kwargs)

        return wrapper

    return decorate


def run_hydra_main(main: Callable[[], None], program: str, check: Callable[[list[str]], None] | None = None) -> None:
    """Call a ``@hydra.main`` entry point (its task function decorated with :func:`exit_on_usage_error`, so that
    Hydra does not log "Error executing job" first) inside the same wrapper, so that Hydra's own composition errors
    (unknown key, unknown group option, bad override syntax, a required ``???`` value not given) end the same way.

    ``check(overrides)`` runs first, for a main whose Hydra run directory lies under the user's paths: Hydra creates
    that directory before the task function runs, so a path mistake there would otherwise be Hydra's traceback."""
    from recipes.config import register_resolvers

    # Hydra prints composition errors itself and exits with 1; with HYDRA_FULL_ERROR=1 it raises them instead
    # (other exceptions then keep their full traceback: they are bugs, not usage errors).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    register_resolvers()

    @exit_on_usage_error(program)
    def checked_main() -> None:
        overrides = sys.argv[1:]
        if check is not None and not any(arg.startswith("-") for arg in overrides):  # --help, --cfg, -m: Hydra's
            check(overrides)
        main()

    checked_main()


def hydra_message(err: ConfigCompositionException | OverrideParseException) -> str:
    """One line for a Hydra composition error: the override at fault and what to do."""
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        return f"{group}={name}: no such option in conf/{group}/ (available: {', '.join(err.options)})"
    if isinstance(err, OverrideParseException):
        reason = err.message.splitlines()[0]
        return (
            f"{err.override}: not a valid override ({reason}); quote lists on the shell, e.g. "
            f"'model.att_context_size=[[70,13]]' (grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)"
        )
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return (
            f"{cause.full_key}: {str(cause).splitlines()[0]} in the composed config: check the spelling "
            f"against conf/ (a new key on purpose takes a leading +)"
        )
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def missing_message(err: MissingMandatoryValue | InterpolationToMissingValueError) -> str:
    key = str(err).splitlines()[0].rsplit(": ", 1)[-1]  # "...: Missing mandatory value: run_dir"
    return f"{key}: required, and not given (add {key}=...)"


def first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
