"""What the command-line tools share: absl's `app.run`, with every failure a user can cause (bad
files and locations, a full disk, stray arguments, Ctrl-C) reported on one line of stderr and a
non-zero exit instead of a traceback. absl's verbosity flag (`-v 1`) shows the traceback, for a
bug report."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from absl import app, flags

# Python's own exit status for a process stopped by SIGINT.
INTERRUPTED_STATUS = 130


def run(
    main: Callable[[], None], program: str, errors: tuple[type[BaseException], ...] = (),
    interrupted: str = "interrupted",
) -> None:
    """app.run of `main` (which takes no arguments: positional ones are refused), turning
    `errors`, OSError and the errors of a hostile file (RecursionError, MemoryError) into one
    line "`program`: error: ...", and Ctrl-C into "`program`: `interrupted`"."""

    def checked(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(program, f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            main()
        except KeyboardInterrupt:
            if _verbose():
                raise
            print(f"{program}: {interrupted}", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)
        except (OSError, RecursionError, MemoryError, *errors) as error:
            if _verbose():
                raise
            fail(program, describe(error))

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:  # absl's own report takes two lines and a usage hint
            fail(program, f"{error} (--helpshort lists the flags)")

    app.run(checked, flags_parser=parse)


def describe(error: BaseException) -> str:
    """An exception as one line: its message's first line, or what it means when it has none."""
    if isinstance(error, RecursionError):
        return "the input is nested too deeply to read"
    if isinstance(error, MemoryError):
        return "the input is too large to read into memory"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def fail(program: str, message: str) -> NoReturn:
    """Exits with status 1 and `program: error: message` on one line of stderr (Python prints a
    SystemExit's text there)."""
    sys.exit(f"{program}: error: {' '.join(message.split())}")


def _verbose() -> bool:
    """Whether -v/--verbosity was given (the tools set their own verbosity, so its value is not
    the user's)."""
    return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present > 0
