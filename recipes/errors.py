"""How a recipe says no to its user: one line naming the key or file, the value and the fix; exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, NoReturn

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue, OmegaConfBaseException

EXIT_USAGE = 2  # a mistake in the config or the input files: fix it and run again
EXIT_PREEMPTED = (
    75  # EX_TEMPFAIL from sysexits.h, "try again later": last.ckpt saved on a signal; running again resumes
)


class UsageError(ValueError):
    """A mistake in the user's config or input files, found before any compute (or instead of a crash).
    The message is shown as it is, so it names the key or file, the value, and what to do; several
    mistakes found together are one line each."""


def _report(program: str, message: str) -> NoReturn:
    for line in message.splitlines() or [""]:
        print(f"{program}: error: {line}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def exit_on_usage_error(program: str):
    """Decorate an entry point: a :class:`UsageError`, or a required ``???`` value it reads that was not given,
    becomes ``<program>: error: <message>`` on stderr and exit status 2, without a traceback (the command-line
    contract shared with ``data_prep``)."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except UsageError as err:
                _report(program, str(err))
            except (MissingMandatoryValue, InterpolationToMissingValueError) as err:  # a ``???`` read by the recipe:
                _report(program, missing_message(err))  # reported here, before Hydra logs "Error executing job"

        return wrapper

    return decorate


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


def run_hydra_main(main: Callable[[], None], program: str) -> None:
    """Call a ``@hydra.main`` entry point (its task function decorated with :func:`exit_on_usage_error`) so that
    Hydra's own composition errors (unknown key, unknown group option, bad override syntax, a required ``???``
    value not given) end the same way: one line, exit status 2."""
    # Hydra prints composition errors itself and exits with 1; with HYDRA_FULL_ERROR=1 it raises them instead
    # (other exceptions then keep their full traceback: they are bugs, not usage errors).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as err:
        _report(program, hydra_message(err))
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        _report(program, missing_message(err))


def missing_message(err: MissingMandatoryValue | InterpolationToMissingValueError) -> str:
    key = str(err).splitlines()[0].rsplit(": ", 1)[-1]  # "...: Missing mandatory value: run_dir"
    return f"{key}: required, and not given (add {key}=...)"


def first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
