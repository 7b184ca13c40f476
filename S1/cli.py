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
from pathlib import Path
from typing import Callable, Sequence

from S1.errors import UserError

log = logging.getLogger("toolkit")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default (unless its help already says it) and keeps the
    examples block as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or isinstance(action.default, (list, tuple)) and not action.default):
            return text
        return text + " (default: %(default)s)"


def examples_from_doc(doc: str | None, *, limit: int = 3) -> list[str]:
    """The first ``limit`` command lines (``python S…``, with their ``\\`` continuations) of a
    script's docstring: what ``--help`` ends with.

    >>> examples_from_doc("Do it.\\n\\n    python S1/x.py --a 1\\n    python S1/x.py --b 2\\n")
    ['python S1/x.py --a 1', 'python S1/x.py --b 2']
    """
    out: list[str] = []
    lines = (doc or "").splitlines()
    i = 0
    while i < len(lines) and len(out) < limit:
        line = lines[i].strip()
        if line.startswith(("python S", "python -m S", "streamlit run S")) and (
                not out or line.split()[:2] == out[0].split()[:2]):    # the script's own commands only
            block = [lines[i].strip()]
            while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                block.append("    " + lines[i].strip())
            out.append("\n".join(block))
        i += 1
    return out


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: … (see --help)``) and exit code 2, defaults shown in
    ``--help``, and ``--help`` ending with real examples: ``examples=[...]``, else the first command
    lines of the calling script's docstring. ``prog`` is spelled the way the README runs the script
    (``python S5/backtest.py``)."""

    def __init__(self, *args, examples: list[str] | None = None, **kw):
        caller = sys._getframe(1).f_globals
        if examples is None:
            examples = examples_from_doc(caller.get("__doc__"))
        prog = kw.get("prog")
        if prog is None and caller.get("__file__") and not args:
            f = Path(caller["__file__"])
            if f.parent.name[:1] == "S" and f.parent.name[1:].isdigit():
                kw["prog"] = prog = f"python {f.parent.name}/{f.name}"
        if prog and prog.startswith("S") and prog.endswith(".py") and "/" in prog:
            kw["prog"] = f"python {prog}"
        kw.setdefault("formatter_class", HelpFormatter)
        if examples and not kw.get("epilog"):
            kw["epilog"] = "examples:\n" + "\n".join(f"  {e}" for e in examples)
        super().__init__(*args, **kw)

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
