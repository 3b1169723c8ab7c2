"""The ``rsrag`` command line: a thin layer over the library that catches only rsrag's own errors.

One module per command. Each module defines its command on the shared :data:`app`; this module imports
them so they register. Errors derived from :class:`~rsrag.tools.errors.RsragError` are printed as one
clear message (exit status 2); a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys

from rsrag.agent.interfaces.cli.app import app, console, state

# --- command registration: one import line per command module; each registers itself on `app` ---
from rsrag.agent.interfaces.cli import describe  # noqa: F401,E402
from rsrag.agent.interfaces.cli import index, search  # noqa: F401,E402
from rsrag.agent.interfaces.cli import encoder  # noqa: F401,E402
from rsrag.agent.interfaces.cli import eval  # noqa: F401,E402,A004
from rsrag.agent.interfaces.cli import ask  # noqa: F401,E402
from rsrag.agent.interfaces.cli import kb  # noqa: F401,E402
from rsrag.agent.interfaces.cli import serve  # noqa: F401,E402
from rsrag.agent.interfaces.cli import chat  # noqa: F401,E402
from rsrag.agent.interfaces.cli import trace  # noqa: F401,E402
from rsrag.agent.interfaces.cli import mcp  # noqa: F401,E402
from rsrag.agent.interfaces.cli import settings  # noqa: F401,E402
# --- end of command registration ---

from rsrag.tools.errors import RsragError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rsrag`` console script."""
    try:
        code = app(args=argv, standalone_mode=False)  # typer.Exit(code) comes back as the return value here
        if isinstance(code, int) and code:
            return code
    except RsragError as exc:
        if state.debug:
            raise
        from rich.markup import escape  # messages quote brackets ("[x0, y0, x1, y1]"), never markup

        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:  # click usage errors and aborts carry their own exit codes
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
