"""``python -m klipnote``: the same entry point as the ``klipnote`` console script."""

from klipnote.cli import main

main()
