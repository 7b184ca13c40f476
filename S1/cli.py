"""Command-line plumbing shared by every sprint script.

Scripts stay thin: they build an :class:`ArgumentParser`, call library code and
let :func:`run` turn failures into **one clear line and a non-zero exit**:

- :class:`UserError` (bad input, missing file, unknown symbol …) -> exit 2
- :class:`NetworkError` (server unreachable, retries exhausted)  -> exit 3
- Ctrl-C -> exit 130; anything unexpected -> exit 1 with a one-line summary
  (``--verbose`` shows the traceback).

Every message passes through the secret redaction of :mod:`S1.settings`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, Sequence

from S1.errors import UserError

log = logging.getLogger("toolkit")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: … (see --help)``) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks")


def _say(message: str) -> None:
    from S1.settings import get_settings

    try:
        message = get_settings().redact(message)
    except Exception:  # settings themselves may be the problem
        pass
    print(message.replace("\n", " ").strip(), file=sys.stderr)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main(argv)`` and map failures to one line + exit code."""
    verbose = "--verbose" in (argv or sys.argv) or "-v" in (argv or sys.argv)
    try:
        from S1.settings import setup_logging

        setup_logging(verbose=verbose)
        code = main(argv)
        return int(code or 0)
    except UserError as exc:
        _say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted: nothing was written (the previous files are intact)")
        return 130
    except Exception as exc:  # last resort: still one line, secrets redacted
        if verbose:
            _say(traceback.format_exc())
        _say(f"error: {type(exc).__name__}: {exc} (re-run with --verbose for the traceback)")
        return 1


def main_entry(main: Callable[[Sequence[str] | None], int | None]) -> None:
    """``if __name__ == "__main__": main_entry(main)``"""
    sys.exit(run(main))


def streamlit_entry(main: Callable[[Sequence[str]], None], *, hint: str,
                    build_parser: Callable[[], argparse.ArgumentParser] | None = None) -> None:
    """``if __name__ == "__main__": streamlit_entry(main, hint=RUN_HINT)`` for a Streamlit app.

    Under ``streamlit run`` it runs ``main(argv)`` and shows a :class:`UserError` in the page;
    as a plain ``python app.py`` it says how to start it (``--help``: the app's options)."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx() is None:
        if build_parser is not None and {"-h", "--help"} & set(sys.argv[1:]):
            build_parser().print_help()
            sys.exit(0)
        sys.exit(f"run it with: {hint}")
    try:
        main(sys.argv[1:])
    except UserError as exc:
        st.error(str(exc))
