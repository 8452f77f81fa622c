-- Deletion by the owner: the event log gains the kind 'deleted'. (Listing an owner's jobs in
-- creation order, either way, is migration 0005's index jobs_owner_newest.)
-- SQLite cannot change a table's CHECK, so job_events is rebuilt: same columns, rows and ids,
-- and the AUTOINCREMENT counter carried over so that ids never go back.

CREATE TABLE job_events_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL CONSTRAINT event_kind_known CHECK (
        kind IN (
            'queued', 'started', 'progress', 'requeued', 'completed', 'error', 'cancelled',
            'deleted'
        )
    ),
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'generating', 'completed', 'error')),
    progress INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
    phase TEXT
        CHECK (phase IN ('preparing', 'optimizing', 'generating', 'encoding', 'storing')),
    created_at REAL NOT NULL,
    data TEXT NOT NULL DEFAULT '{}' CHECK (json_type(data) = 'object')
);

INSERT INTO job_events_new (id, job_id, owner, kind, status, progress, phase, created_at, data)
SELECT id, job_id, owner, kind, status, progress, phase, created_at, data FROM job_events;

DELETE FROM sqlite_sequence WHERE name = 'job_events_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'job_events_new', seq FROM sqlite_sequence WHERE name = 'job_events';

DROP TABLE job_events;
ALTER TABLE job_events_new RENAME TO job_events;

CREATE INDEX job_events_job ON job_events (job_id, id);
CREATE INDEX job_events_progress ON job_events (job_id, id) WHERE kind = 'progress';
