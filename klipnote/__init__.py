"""klipnote: batch transcription from the shell, over a local job spool.

The package is importable as a library: :mod:`klipnote.spool` holds jobs,
:mod:`klipnote.claim` is the worker's side of it, :mod:`klipnote.submit` turns paths into jobs.
The CLI in :mod:`klipnote.cli` is a thin layer over these.
"""

__version__ = "0.1.0"
