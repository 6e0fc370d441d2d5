"""What the launchers share: one-line errors, quiet logging, a --help that exits 0, --debug.

    if __name__ == "__main__":
        cli.run(main)

* An expected failure (any `zoo.errors.ZooError`, a bad flag, argument or config file, a missing
  or unwritable file, a full disk, a refused value, XLA running out of memory) prints one line `error: <message>` to stderr
  and exits with 2 (usage and config errors) or 1 (everything else), without a traceback;
  `--debug` lets it raise with its traceback instead. Anything else is a bug and raises as usual.
* Ctrl-C outside the training loop's own handler (start-up, compiling) prints one line and
  exits 130, as the loop does after its checkpoint.
* absl logs at WARNING (orbax, grain and the TFDS readers log a lot at INFO) unless --verbosity
  is given.
* --help, --helpshort, --helpfull and -h print the help and exit 0 (absl's own exit 1).
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, NoReturn

from absl import app, flags, logging

from zoo.errors import ConfigError, InputError, WorkdirError, ZooError

flags.DEFINE_bool("debug", False, "On an error, raise it with its traceback instead of printing "
                  "one line.")
FLAGS = flags.FLAGS

HELP_FLAGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort", "--helpfull",
              "-helpfull", "--helpxml", "-helpxml")
USAGE_EXIT = 2  # bad flags, arguments and config values
FAILURE_EXIT = 1  # everything else that went wrong as foreseen (missing checkpoint, full disk)
INTERRUPTED_EXIT = 130  # SIGINT, as the shell reports it
# Errors of a user's making: their message is the whole story.
_USAGE_ERRORS = (ConfigError, InputError, app.UsageError, flags.Error)
# Errors raised as refusals, whose message names the fix, but that are not the zoo's own (a
# file the OS will not open, a value an underlying library refuses).
_FOREIGN_REFUSALS = (OSError, ValueError)


def _out_of_memory(error: BaseException) -> bool:
    """XLA's allocation failure (jax's JaxRuntimeError, matched by name: this module must not
    import jax, whose backend the zoo configures first)."""
    return (type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
            and ("RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)))


def exit_code(error: BaseException) -> int | None:
    """USAGE_EXIT or FAILURE_EXIT for an expected error, None for one that is a bug."""
    if isinstance(error, _USAGE_ERRORS):
        return USAGE_EXIT
    if isinstance(error, (ZooError,) + _FOREIGN_REFUSALS) or _out_of_memory(error):
        return FAILURE_EXIT
    return None


def error_line(error: BaseException) -> str:
    """`error: <message>` on one line."""
    message = " ".join(str(error).split()) or type(error).__name__
    if _out_of_memory(error):
        first = str(error).strip().splitlines()[0]
        return (f"error: out of memory: {first[:300]}; lower the batch size, sequence length or "
                "number of samples (a training run resumes from its latest checkpoint)")
    required = re.fullmatch(r"flag --(\w+)=None: Flag --\1 must have a value other than None\.",
                            message)
    if required:  # absl's words for a required flag that was not given
        message = f"--{required.group(1)} is required (--help lists the flags)"
    if not isinstance(error, (ZooError,) + _USAGE_ERRORS):
        message += " (--debug shows where)"
    return f"error: {message}"


def fail(error: BaseException) -> NoReturn:
    """Prints `error_line(error)` to stderr and exits with `exit_code(error)`."""
    print(error_line(error), file=sys.stderr, flush=True)
    sys.exit(exit_code(error) or FAILURE_EXIT)


def existing_workdir(workdir: str) -> str:
    """`workdir` if it is a directory; a WorkdirError naming it and the command that makes one
    otherwise. Nothing is created."""
    train = (f"python -m experiments.train --config experiments/configs/<name>.py "
             f"--workdir {workdir}")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir!r} is a file, not a directory; pass the directory "
                           f"a training run wrote ({train}).")
    if not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir!r} does not exist; train a model into it first: "
                           f"{train}")
    return workdir


def _debug_requested(argv: list[str]) -> bool:
    """--debug as absl will parse it, read before absl parses anything."""
    debug = False
    for arg in argv[1:]:
        if arg == "--":
            break
        name, _, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "debug":
            debug = value.lower() not in ("false", "0", "no") if value else True
        elif arg.startswith("-") and name == "nodebug":
            debug = False
    return debug


def _help_requested(argv: list[str]) -> str | None:
    for arg in argv[1:]:
        if arg == "--":
            return None
        if arg.split("=", 1)[0] in HELP_FLAGS:
            return "--help" if arg in ("-h", "-?") else arg.split("=", 1)[0]
    return None


def _flags_parser(precheck: Callable[[list[str]], None] | None):
    def parse(argv: list[str]) -> list[str]:
        help_flag = _help_requested(argv)
        if help_flag:
            try:
                FLAGS([argv[0], help_flag])  # prints the help; absl then exits with 1
            except SystemExit:
                pass
            sys.exit(0)
        try:
            if precheck is not None:
                precheck(argv)
            return FLAGS(argv)
        except Exception as error:  # noqa: BLE001 - sorted by exit_code below
            if _debug_requested(argv) or exit_code(error) is None:
                raise
            fail(error)

    return parse


def run(main: Callable[[list[str]], Any], *,
        precheck: Callable[[list[str]], None] | None = None) -> None:
    """`app.run(main)` with the behaviour of the module docstring. `precheck(argv)` runs before
    absl parses the flags (e.g. a config file's friendlier checks); it raises to refuse."""

    def checked_main(argv: list[str]) -> Any:
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handler (start-up,
            if FLAGS.debug:       # compiling): no checkpoint was due, so nothing is lost
                raise
            print("error: interrupted (SIGINT); rerun the same command (a training run resumes "
                  "from its workdir's latest checkpoint)", file=sys.stderr, flush=True)
            sys.stdout.flush()
            # Not sys.exit: interpreter shutdown while XLA's compiler threads still run has
            # crashed with a segmentation fault.
            os._exit(INTERRUPTED_EXIT)
        except Exception as error:  # noqa: BLE001 - sorted by exit_code below
            if FLAGS.debug or exit_code(error) is None:
                raise
            fail(error)

    app.run(checked_main, flags_parser=_flags_parser(precheck))
