-- Fair queueing and the queue's outlook: a key's priority, the indexes the fair claim reads
-- per key, and each model's moving measure of generation time.

ALTER TABLE api_keys ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'
    CONSTRAINT priority_known CHECK (priority IN ('high', 'normal', 'low'));

-- The fair claim walks the keys with queued jobs (a loose scan: one probe per key) and takes
-- each key's oldest queued job from here.
CREATE INDEX jobs_queued_owner ON jobs (owner, created_at, id) WHERE status = 'queued';
-- (A key's running jobs and when its newest job started, which the claim also reads, are
-- migration 0009's jobs_owner_status and jobs_owner_started.)

-- An exponentially weighted mean of each model's completed jobs' generation seconds
-- (started_at to finished_at), updated as each job completes.
CREATE TABLE model_pace (
    model TEXT PRIMARY KEY,
    mean_seconds REAL NOT NULL CHECK (mean_seconds >= 0),
    samples INTEGER NOT NULL CHECK (samples >= 1),
    updated_at REAL NOT NULL
);
