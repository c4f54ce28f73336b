"""The ``klipnote`` command. Importing this package registers every command on :data:`app`.

The modules are imported in the order their commands appear in ``klipnote --help``.
"""

from klipnote.cli import jobs, workers, monitor, configure, admin  # noqa: I001
from klipnote.cli.app import app, main

__all__ = ["admin", "app", "configure", "jobs", "main", "monitor", "workers"]
