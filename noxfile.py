"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``.

CI does not use nox: it runs ``scripts/test`` (see README), which needs nothing preinstalled.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite; pass pytest arguments after ``--``."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "klipnote", "tests", "scripts", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print tables: CLI start-up latency against bare Python."""
    session.install("-e", ".")
    session.run("python", "scripts/bench_cli_latency.py", *session.posargs)
