"""The ``klipnote`` command. Importing this package registers every command on :data:`app`."""

from klipnote.cli import jobs, workers
from klipnote.cli.app import app, main

__all__ = ["app", "jobs", "main", "workers"]
