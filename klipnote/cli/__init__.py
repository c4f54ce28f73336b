"""The ``klipnote`` command. Importing this package registers every command on :data:`app`."""

from klipnote.cli import admin, configure, jobs, monitor, workers
from klipnote.cli.app import app, main

__all__ = ["admin", "app", "configure", "jobs", "main", "monitor", "workers"]
