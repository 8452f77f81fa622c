-- Admission (idempotent creates, per-key limits): each key's own limits (NULL: the
-- REELFORGE_KEY_* default), the idempotency keys of recent creates, and the indexes that the
-- usage counts of a create and the claim's running count read.

ALTER TABLE api_keys ADD COLUMN rpm INTEGER CHECK (rpm IS NULL OR rpm >= 1);
ALTER TABLE api_keys ADD COLUMN max_queued INTEGER CHECK (max_queued IS NULL OR max_queued >= 1);
ALTER TABLE api_keys ADD COLUMN max_running INTEGER
    CHECK (max_running IS NULL OR max_running >= 1);
ALTER TABLE api_keys ADD COLUMN daily_video_seconds INTEGER
    CHECK (daily_video_seconds IS NULL OR daily_video_seconds >= 1);

-- One row per (API key, Idempotency-Key) taken in the last 24 h: job_id is NULL while its
-- first request is being admitted, then the job that request made.
CREATE TABLE idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint TEXT NOT NULL,
    job_id TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX jobs_owner_status ON jobs (owner, status);
CREATE INDEX jobs_owner_started ON jobs (owner, started_at) WHERE started_at IS NOT NULL;
