"""The ``klipnote`` command. Importing this package registers every command on :data:`app`.

The modules are imported in the order their commands appear in ``klipnote --help``; then each command gets its
"Docs: PAGE" line from :data:`klipnote.cli.app.DOCS`.
"""

from klipnote.cli import jobs, workers, broker, monitor, configure, admin  # noqa: I001
from klipnote.cli.app import app, attach_docs, main

attach_docs(app)  # every command's --help ends with its page of docs/ (klipnote.cli.app.DOCS)

__all__ = ["admin", "app", "broker", "configure", "jobs", "main", "monitor", "workers"]
