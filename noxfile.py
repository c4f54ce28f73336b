"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s bench``.

CI does not use nox: it runs ``scripts/test`` (see README), which needs nothing preinstalled.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
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
def typecheck(session: nox.Session) -> None:
    """mypy on klipnote/ (pyproject.toml's [tool.mypy]); engine libraries absent here are taken as Any."""
    session.install("-e", ".[test]")
    session.run("mypy")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Every benchmark (scripts/bench: tables on stdout, JSON under bench-results/).

    They run in the project's environments, ``.venv`` and ``.venv-belle2`` (run scripts/bootstrap
    once first), because each measures the engine in the environment its worker uses. Arguments
    after ``--`` go to scripts/bench, e.g. ``nox -s bench -- --size smoke --only spool``.
    """
    session.run("scripts/bench", *session.posargs, external=True)
