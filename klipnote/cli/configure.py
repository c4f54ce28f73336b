"""Commands on settings: config show, config init, config path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from klipnote import config, render
from klipnote.cli.app import JsonFlag, app, session_of

config_app = typer.Typer(
    name="config",
    help="Show the effective settings and where each came from; write a commented config file.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app)


@config_app.command("show")
def show(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every setting with its effective value and its source: default, file, environment or flag.

    Secrets (hf_token) are masked. Exit 2 when a setting is invalid, with the key, the value and
    what is allowed.
    """
    settings = session_of(ctx).settings
    path = config.config_path()
    described = config.describe(settings)
    render.warn_lines([*filter(None, [config.missing_config_warning()]), *config.exposure_warnings(settings)])
    if json_out:
        render.print_json({"config_file": {"path": str(path), "exists": path.exists()}, "settings": described})
        return
    render.settings_table(path, described)


@config_app.command("init")
def init(
    path: Annotated[Optional[Path], typer.Option(
        "--path", metavar="FILE", help="Write here instead of KLIPNOTE_CONFIG or ~/.config/klipnote/config.toml.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a config file with every setting commented out: its help, environment names and default.

    Uncomment a line to change a setting. The file gets mode 0600 (it may come to hold hf_token);
    an existing file is kept unless --force. Exit 1 if it exists or cannot be written.
    """
    read_from = config.config_path()
    target = Path(os.path.abspath(path.expanduser())) if path is not None else read_from
    config.write_template(target, force=force)
    sys.stdout.write(f"wrote {target}\n")
    if target != Path(os.path.abspath(read_from)):
        render.error(f"note: klipnote reads {read_from}; set KLIPNOTE_CONFIG={target} to use this file")


@config_app.command("path")
def path_cmd() -> None:
    """Print the config file's path (KLIPNOTE_CONFIG, else ~/.config/klipnote/config.toml), found or not."""
    sys.stdout.write(f"{config.config_path()}\n")

