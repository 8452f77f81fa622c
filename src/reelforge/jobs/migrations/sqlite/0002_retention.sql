-- Retention: when a job's files were deleted, and named chores that one worker runs at a time.

ALTER TABLE jobs ADD COLUMN purged_at REAL;

CREATE INDEX jobs_finished ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND purged_at IS NULL;

CREATE TABLE chores (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
