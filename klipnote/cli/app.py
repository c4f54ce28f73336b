"""The ``klipnote`` application object, the per-command session and the entry point.

Commands live in sibling modules (jobs, workers, ...), each a thin layer that parses, calls the
library, and prints; importing :mod:`klipnote.cli` registers them all.

Exit codes: 0 success; 1 the operation failed (a rejected input, a job not done, a job that
failed); 2 the command line or configuration is wrong; 124 ``wait`` timed out; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Optional

import typer

from klipnote import __version__, render
from klipnote.config import Settings, load_settings
from klipnote.errors import KlipnoteError
from klipnote.spool import Spool

EXIT_TIMEOUT = 124

app = typer.Typer(
    name="klipnote",
    help="Batch transcription from the shell: submit audio and video files to a spool; "
    "long-running workers turn them into subtitles and transcripts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: The page that covers each command, shown as "Docs: PAGE" at the end of its ``--help``: the one place these
#: names live. Keys are command paths ("" is ``klipnote`` itself); values are paths from the repository root,
#: optionally with a heading's anchor. tests/test_docs.py checks that every command has one and that each resolves.
DOCS = {
    "": "README.md#documentation",
    "submit": "docs/commands.md#submit",
    "status": "docs/commands.md#json-output-stable",
    "list": "docs/commands.md",
    "result": "docs/subtitles.md#outputs",
    "wait": "docs/commands.md#exit-codes",
    "cancel": "docs/spool.md#a-jobs-life",
    "retry": "docs/spool.md#a-jobs-life",
    "gc": "docs/deploy.md#backup-and-retention",
    "worker": "docs/workers.md",
    "dispatch": "docs/broker.md#dispatch-and-reconciling",
    "flower": "docs/broker.md#flower",
    "workers": "docs/monitoring.md#klipnote-workers",
    "top": "docs/monitoring.md#klipnote-top",
    "metrics": "docs/monitoring.md#klipnote-metrics",
    "doctor": "docs/monitoring.md#klipnote-doctor",
    "config": "docs/configuration.md",
    "config show": "docs/configuration.md#seeing-and-writing-the-settings",
    "config init": "docs/configuration.md#seeing-and-writing-the-settings",
    "config path": "docs/configuration.md#where-settings-come-from",
    "models": "docs/models.md",
    "models pull": "docs/models.md#pulling-models",
    "models list": "docs/models.md#listing-and-verifying",
    "models verify": "docs/models.md#listing-and-verifying",
}


def command_name(info: typer.models.CommandInfo) -> str:
    """A registered command's name as ``--help`` shows it (typer derives a missing one from the function)."""
    return info.name or getattr(info.callback, "__name__", "").replace("_", "-")


def attach_docs(typer_app: typer.Typer, path: str = "") -> None:
    """End the help of *typer_app* and of every command and group under it with its page from :data:`DOCS`.

    Called once the command modules have registered their commands; a command missing from :data:`DOCS` gets no
    pointer here and fails tests/test_docs.py.
    """
    if path in DOCS:
        typer_app.info.epilog = f"Docs: {DOCS[path]}"
    for info in typer_app.registered_commands:
        name = f"{path} {command_name(info)}".strip()
        if name in DOCS:
            info.epilog = f"Docs: {DOCS[name]}"
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:  # typer's type allows none; add_typer always sets one
            attach_docs(group.typer_instance, f"{path} {group.name or group.typer_instance.info.name}".strip())


JsonFlag = Annotated[bool, typer.Option("--json", help="Print stable JSON for scripts instead of a table.")]
IdsArg = Annotated[list[str], typer.Argument(metavar="ID...", help="Job ids or unique prefixes of them.")]


class Session:
    """Settings and spool for one command, loaded on first use from its flags (fixed once built)."""

    def __init__(self, flags: Mapping[str, object]) -> None:
        self.flags: Mapping[str, object] = MappingProxyType(dict(flags))
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.flags)
        return self._settings

    def spool(self, *, create: bool = False) -> Spool:
        return Spool.from_settings(self.settings, create=create)


def session_of(ctx: typer.Context, **flags: object) -> Session:
    """The command's session: the root's flags (``--spool``) plus the setting flags of the command itself."""
    root: Session = ctx.find_root().obj
    return Session({**root.flags, **flags}) if flags else root


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"klipnote {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    spool: Annotated[
        Optional[Path],
        typer.Option("--spool", metavar="DIR", help="Spool directory; overrides KLIPNOTE_SPOOL and the config file."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = Session({"spool": spool})


def main() -> None:
    """Console-script entry point: every :class:`KlipnoteError` becomes one line and its exit code."""
    try:
        app(prog_name="klipnote")
    except KlipnoteError as exc:
        render.error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        render.error("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # `klipnote list | head`: the reader left; that is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
