"""Retention: finished jobs, old quarantined jobs and leftovers of crashed submits are deleted (``klipnote gc``).

Queued and running jobs are never touched. A job is moved out of ``jobs/`` under its state lock,
after its state is read again there (a retry may have raced the listing), and deleted afterwards.
"""

from __future__ import annotations

import os
import shutil

from klipnote import defaults
from klipnote.errors import KlipnoteError
from klipnote.job import now
from klipnote.spool import Spool


def gc(spool: Spool, older_than: float, *, dry_run: bool = False) -> list[str]:
    """Delete finished jobs (done, failed, canceled) that finished over ``older_than`` seconds ago.

    Leftovers of crashed submits and old quarantined jobs go too. Returns what was (or would be) removed.
    """
    cutoff = now() - older_than
    removed: list[str] = []
    for job_id in spool.job_ids():
        try:
            status = spool.load_status(job_id)
        except KlipnoteError:
            continue
        if not status.state.terminal or (status.finished_at or status.updated_at) > cutoff:
            continue
        removed.append(job_id)
        if not dry_run:
            _remove_job(spool, job_id, cutoff)
    for folder in (spool.quarantine, spool.tmp):
        limit = cutoff if folder is spool.quarantine else now() - defaults.STALE_STAGING_AGE
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.lstat().st_mtime < limit:
                removed.append(f"{folder.name}/{path.name}")
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
    return removed


def _remove_job(spool: Spool, job_id: str, cutoff: float) -> None:
    with spool.io(f"removing {job_id}"):
        with spool.state_lock(job_id):
            status = spool.load_status(job_id)  # re-check: a retry may have raced us
            if not status.state.terminal or (status.finished_at or status.updated_at) > cutoff:
                return
            sha = spool.manifest(job_id).input.sha256
            doomed = spool.tmp / f"gc-{job_id}"
            os.rename(spool.job_dir(job_id), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        (spool.index / sha / job_id).unlink(missing_ok=True)
