"""Who claimed and who completed each job, recorded by a trigger on ``jobs``, and the tally
of a run checked against it and against the video files.

"Completed exactly once" is checked three ways:

- the trigger records every UPDATE that leaves a row ``completed`` (``completed`` →
  ``completed`` too): exactly one per job;
- each was made under the lease the job held at that moment: the video key carries its
  writer's token (``videos/<job>-<token[:12]>.mp4``), the trigger the row's token before
  the UPDATE;
- the files: each completed job's ``video_key`` names a file, and every other file in
  ``videos/`` belongs to a worker that could not record it (killed between storing and
  recording it, or its ``complete`` failed with its connection, which it logs). A worker
  whose completion was refused discards its file, so a stray file of a worker that was
  neither killed nor cut off means a completion that was overwritten.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.scale.cluster import Cluster

AUDIT_SQL = """
CREATE TABLE audit_claims (
    job_id text NOT NULL, token text NOT NULL, worker_id text NOT NULL, attempt integer NOT NULL
);
CREATE TABLE audit_completions (job_id text NOT NULL, holder_token text, video_key text NOT NULL);
CREATE FUNCTION audit_jobs() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.status = 'completed' THEN
        INSERT INTO audit_completions VALUES (NEW.id, OLD.lease_token, NEW.video_key);
    ELSIF NEW.lease_token IS NOT NULL AND NEW.lease_token IS DISTINCT FROM OLD.lease_token THEN
        INSERT INTO audit_claims VALUES (NEW.id, NEW.lease_token, NEW.worker_id, NEW.attempts);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER audit_jobs AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION audit_jobs();
"""


def install(url: str) -> None:
    """Add the audit tables and trigger to the schema of ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(AUDIT_SQL)


def video_name(job_id: str, token: str) -> str:
    """The file a worker holding ``token`` stores ``job_id``'s video as (``Worker._finish``)."""
    return f"{job_id}-{token[:12]}.mp4"


@dataclass(frozen=True)
class Tally:
    """The end state of a run; ``violations`` lists what breaks "each job completed once"."""

    created: int
    completed: int
    errors: int
    lost: int
    """Created jobs missing from the database or not finished."""
    completions: int
    """Accepted completions (trigger rows) of the created jobs."""
    twice: list[str]
    """Jobs whose completion was accepted more than once."""
    stale: list[str]
    """Jobs completed by a worker that no longer held their lease."""
    files: int
    missing: list[str]
    """Completed jobs whose video file does not exist."""
    left_by_kills: int
    """Files of workers killed before recording them."""
    left_by_cuts: int
    """Files of workers whose ``complete`` failed with their connection (they log it)."""
    stray: list[str]
    """Other files nobody points to."""

    def violations(self) -> list[str]:
        found = [f"completed twice: {self.twice}"] if self.twice else []
        found += [f"completed under a lost lease: {self.stale}"] if self.stale else []
        found += [f"video missing: {self.missing}"] if self.missing else []
        found += [f"stray video files: {self.stray}"] if self.stray else []
        if self.files - self.left_by_kills - self.left_by_cuts != self.completed:
            found.append(f"{self.files} video files for {self.completed} completed jobs")
        return found

    def summary(self) -> str:
        return (
            f"created {self.created}, completed {self.completed}, errors {self.errors}, "
            f"lost {self.lost}; accepted completions {self.completions} (twice "
            f"{len(self.twice)}, under a lost lease {len(self.stale)}); video files "
            f"{self.files} (missing {len(self.missing)}, left by killed workers "
            f"{self.left_by_kills}, by cut-off workers {self.left_by_cuts}, stray "
            f"{len(self.stray)})"
        )


def tally(url: str, ids: list[str], cluster: Cluster) -> Tally:
    """The tally of the created ``ids`` once the run is over."""
    with psycopg.connect(url) as conn:
        jobs = {
            job_id: (status, video_key)
            for job_id, status, video_key in conn.execute(
                "SELECT id, status, video_key FROM jobs WHERE id = ANY(%s)", (ids,)
            )
        }
        completions = conn.execute(
            "SELECT job_id, holder_token, video_key FROM audit_completions WHERE job_id = ANY(%s)",
            (ids,),
        ).fetchall()
        holders = {
            video_name(job_id, token): worker_id
            for job_id, token, worker_id in conn.execute(
                "SELECT job_id, token, worker_id FROM audit_claims"
            )
        }
    statuses = Counter(status for status, _ in jobs.values())
    per_job = Counter(job_id for job_id, _, _ in completions)
    videos = cluster.data_dir / "videos"
    files = {path.name for path in videos.iterdir()}
    keys = {Path(key).name for _, key in jobs.values() if key is not None}
    unkept = sorted(files - keys)
    why = {name: _left_by(name, holders.get(name), cluster) for name in unkept}
    return Tally(
        created=len(ids),
        completed=statuses["completed"],
        errors=statuses["error"],
        lost=len(ids) - statuses["completed"] - statuses["error"],
        completions=len(completions),
        twice=sorted(job_id for job_id, count in per_job.items() if count > 1),
        stale=sorted(
            {
                job_id
                for job_id, token, key in completions
                if token is None or Path(key).name != video_name(job_id, token)
            }
        ),
        files=len(files),
        missing=sorted(key for key in keys if key not in files),
        left_by_kills=sum(reason == "kill" for reason in why.values()),
        left_by_cuts=sum(reason == "cut" for reason in why.values()),
        stray=[name for name, reason in why.items() if reason is None],
    )


def _left_by(name: str, worker_id: str | None, cluster: Cluster) -> str | None:
    """``"kill"`` if the video file ``name`` was stored by a worker the test killed, ``"cut"``
    if by one that logged that it could not record the job, else None."""
    if worker_id is None:
        return None
    pid = int(worker_id.rsplit(":", 2)[1])
    if pid in cluster.killed:
        return "kill"
    job_id = name.partition("-")[0]
    return "cut" if f"job {job_id} could not be recorded" in cluster.log(pid) else None
