-- The job store's first schema: jobs and API keys (as SQLite version 1 shipped it inline).
-- Times are epoch seconds from the store's clock. The CHECK constraints make impossible rows
-- impossible; the PostgreSQL schema has the same ones.

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'generating', 'completed', 'error')),
    progress INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_token TEXT,
    lease_expires_at REAL,
    worker_id TEXT,
    error_name TEXT,
    error_message TEXT,
    video_key TEXT,
    credits_used REAL CHECK (credits_used IS NULL OR credits_used >= 0),
    meta TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    CONSTRAINT attempts_in_range CHECK (attempts >= 0 AND attempts <= max_attempts),
    CONSTRAINT queued_can_be_claimed CHECK (status <> 'queued' OR attempts < max_attempts),
    CONSTRAINT generating_has_lease CHECK (
        status <> 'generating' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT only_generating_has_lease CHECK (
        status = 'generating' OR (lease_token IS NULL AND lease_expires_at IS NULL)
    ),
    CONSTRAINT completed_has_video CHECK (
        status <> 'completed' OR (video_key IS NOT NULL AND progress = 100)
    ),
    CONSTRAINT error_has_reason CHECK (
        status <> 'error' OR (error_name IS NOT NULL AND error_message IS NOT NULL)
    ),
    CONSTRAINT queued_not_finished CHECK (status <> 'queued' OR finished_at IS NULL),
    CONSTRAINT terminal_is_finished CHECK (
        status NOT IN ('completed', 'error') OR finished_at IS NOT NULL
    )
);

CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_expires_at)
    WHERE status = 'generating';

CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix);
