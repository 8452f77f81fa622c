-- The refactored job record (its dialect, webhook, upstream id, adapter, deletion, phase and
-- storage retries), the input images each job refers to, and the event log.

ALTER TABLE jobs ADD COLUMN dialect TEXT NOT NULL DEFAULT 'hailuo';
ALTER TABLE jobs ADD COLUMN callback_url TEXT;
ALTER TABLE jobs ADD COLUMN upstream_id TEXT;
ALTER TABLE jobs ADD COLUMN lora TEXT;
ALTER TABLE jobs ADD COLUMN deleted_at REAL;
-- SQLite cannot add a table constraint to a table, so the phase's rules are its column's.
ALTER TABLE jobs ADD COLUMN phase TEXT
    CONSTRAINT phase_known
        CHECK (phase IN ('preparing', 'optimizing', 'generating', 'encoding', 'storing'))
    CONSTRAINT only_generating_has_phase CHECK (phase IS NULL OR status = 'generating');
ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0
    CONSTRAINT retries_not_negative CHECK (retries >= 0);
ALTER TABLE jobs ADD COLUMN run_after REAL;

-- An owner's jobs, newest first (the list endpoints); deleted jobs are never listed.
DROP INDEX jobs_owner;
CREATE INDEX jobs_owner_newest ON jobs (owner, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- The storage keys of the input images a job refers to: retention asks which are in use.
CREATE TABLE job_inputs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
) WITHOUT ROWID;

CREATE INDEX job_inputs_key ON job_inputs (key);

INSERT INTO job_inputs (job_id, key)
SELECT id, json_extract(request, '$.first_frame.key') FROM jobs
WHERE json_extract(request, '$.first_frame.key') IS NOT NULL
UNION
SELECT id, json_extract(request, '$.last_frame.key') FROM jobs
WHERE json_extract(request, '$.last_frame.key') IS NOT NULL;

-- The event log: one row per change of a job, appended in the change's transaction. The id
-- never goes back (AUTOINCREMENT: not even after the newest rows are deleted), and writers
-- take turns, so ids are in commit order.
CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL CONSTRAINT event_kind_known CHECK (
        kind IN ('queued', 'started', 'progress', 'requeued', 'completed', 'error', 'cancelled')
    ),
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'generating', 'completed', 'error')),
    progress INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
    phase TEXT
        CHECK (phase IN ('preparing', 'optimizing', 'generating', 'encoding', 'storing')),
    created_at REAL NOT NULL,
    data TEXT NOT NULL DEFAULT '{}' CHECK (json_type(data) = 'object')
);

-- "One job's events after id N"; "every event after id N" is the primary key.
CREATE INDEX job_events_job ON job_events (job_id, id);
-- Progress events are most of the log: the heartbeat's throttle and the pruning find them here.
CREATE INDEX job_events_progress ON job_events (job_id, id) WHERE kind = 'progress';
