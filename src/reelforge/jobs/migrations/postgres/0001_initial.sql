-- The job store's first schema: jobs and API keys.
-- Times are epoch seconds from the store's clock (as in the SQLite store), not timestamps.
-- The CHECK constraints mirror the SQLite schema's: the database refuses impossible rows.

CREATE TABLE jobs (
    id text PRIMARY KEY,
    owner text NOT NULL,
    model text NOT NULL,
    request jsonb NOT NULL CHECK (jsonb_typeof(request) = 'object'),
    status text NOT NULL
        CHECK (status IN ('queued', 'generating', 'completed', 'error')),
    progress integer NOT NULL CHECK (progress BETWEEN 0 AND 100),
    attempts integer NOT NULL,
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    lease_token text,
    lease_expires_at double precision,
    worker_id text,
    error_name text,
    error_message text,
    video_key text,
    credits_used double precision CHECK (credits_used IS NULL OR credits_used >= 0),
    meta jsonb NOT NULL CHECK (jsonb_typeof(meta) = 'object'),
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
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

-- The claim scans queued jobs oldest first; finished jobs never enter this index.
CREATE INDEX jobs_claim ON jobs (created_at, id) WHERE status = 'queued';
-- The expired-lease pass looks only at generating jobs.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'generating';
CREATE INDEX jobs_owner ON jobs (owner, created_at);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    created_at double precision NOT NULL,
    revoked_at double precision
);

CREATE INDEX api_keys_prefix ON api_keys (prefix);
