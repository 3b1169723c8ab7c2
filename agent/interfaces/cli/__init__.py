"""The ``rsrag`` command line: a thin layer over the library that catches only rsrag's own errors.

One module per command. Each module defines its command on the shared :data:`app`; this module imports
them so they register. Errors derived from :class:`~rsrag.tools.errors.RsragError` are printed as one
clear line on standard error (exit status 2, or 1 for a bug); a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys

from rsrag.agent.interfaces.cli.app import app, err_console, state

__all__ = ["app", "main"]

# --- command registration: one import line per command module; each registers itself on `app` ---
from rsrag.agent.interfaces.cli import describe  # noqa: F401,E402
from rsrag.agent.interfaces.cli import index, search  # noqa: F401,E402
from rsrag.agent.interfaces.cli import encoder  # noqa: F401,E402
from rsrag.agent.interfaces.cli import eval  # noqa: F401,E402,A004
from rsrag.agent.interfaces.cli import ask  # noqa: F401,E402
from rsrag.agent.interfaces.cli import kb  # noqa: F401,E402
from rsrag.agent.interfaces.cli import catalog  # noqa: F401,E402
from rsrag.agent.interfaces.cli import serve  # noqa: F401,E402
from rsrag.agent.interfaces.cli import chat  # noqa: F401,E402
from rsrag.agent.interfaces.cli import trace  # noqa: F401,E402
from rsrag.agent.interfaces.cli import mcp  # noqa: F401,E402
from rsrag.agent.interfaces.cli import settings  # noqa: F401,E402
from rsrag.agent.interfaces.cli import cache  # noqa: F401,E402
# --- end of command registration ---

from rsrag.tools.errors import RsragError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rsrag`` console script: runs one command and returns its exit status.

    Standard output carries only the command's results (JSON with ``--json``); every error goes to
    standard error as one line. Exit status: 0 on success; 2 for a usage error (an unknown option, a bad
    value), a bad input, a configuration problem or an unavailable resource (the kind of the error, see
    :mod:`rsrag.tools.errors`); 1 for a bug (the line says to run again with ``--debug``); 130 when
    interrupted. ``--debug`` shows the traceback of an rsrag error or a bug instead of the line.
    """
    from rsrag.tools.encoders.runtime import tune_cpu_runtime

    tune_cpu_runtime()  # environment only, before any command can load torch (its OpenMP reads it then)
    try:
        code = app(args=argv, standalone_mode=False, prog_name="rsrag")  # typer.Exit(code) comes back as the return value here
        if isinstance(code, int) and code:
            return code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:
        return _report(exc)
    return 0


def _click_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Click's exception, exit and abort classes: typer's vendored copy (what the pinned typer raises) and,
    when it is loaded, click itself (what a plugin or an older typer raises)."""
    import typer

    vendored = sys.modules[typer.BadParameter.__module__]
    exceptions: list[type[BaseException]] = [vendored.ClickException]
    exits: list[type[BaseException]] = [typer.Exit]
    aborts: list[type[BaseException]] = [typer.Abort]
    click = sys.modules.get("click.exceptions")
    if click is not None:
        exceptions.append(click.ClickException)
        exits.append(click.Exit)
        aborts.append(click.Abort)
    return tuple(exceptions), tuple(exits), tuple(aborts)


def _say(line: str) -> None:
    from rich.markup import escape  # messages quote brackets ("[x0, y0, x1, y1]"), never markup

    label, _, rest = line.partition(": ")
    err_console.print(f"[bold red]{escape(label)}:[/] {escape(rest)}", highlight=False, soft_wrap=True)


def _report(exc: Exception) -> int:
    """Print one line for ``exc`` on standard error and return the exit status (or re-raise with --debug)."""
    from rsrag.tools.errors import cli_message, exit_status, one_line

    click_errors, exits, aborts = _click_classes()
    if isinstance(exc, exits):
        return int(getattr(exc, "exit_code", 1) or 0)
    if isinstance(exc, aborts):
        err_console.print("[yellow]aborted[/]")
        return 1
    if isinstance(exc, click_errors):
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `rsrag` or `rsrag kb`: the help, exit 2
            exc.show()  # type: ignore[attr-defined]
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _say(f"error: {one_line(Exception(exc.format_message()))}{hint}")  # type: ignore[attr-defined]
        return 2
    if state.debug:
        raise exc
    if isinstance(exc, OSError) and not isinstance(exc, RsragError) and exc.filename:
        # the operating system refused a file the user named (an output folder that does not exist, a
        # read-only target): that names the thing at fault as well as an rsrag error would
        _say(f"error: {exc.filename}: {exc.strerror or one_line(exc)}")
        return 2
    _say(cli_message(exc))
    return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
