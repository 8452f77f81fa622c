-- The refactored job record (its dialect, webhook, upstream id, adapter, deletion, phase and
-- storage retries), the input images each job refers to, the event log, and the clock.

-- Every time the store writes or compares is the database's (one clock for every machine, so
-- skew cannot hand a live lease to a second worker), unless a test injects its own.
CREATE FUNCTION reelforge_now(injected double precision) RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT COALESCE(injected, extract(epoch FROM now())::double precision) $$;

ALTER TABLE jobs
    ADD COLUMN dialect text NOT NULL DEFAULT 'hailuo',
    ADD COLUMN callback_url text,
    ADD COLUMN upstream_id text,
    ADD COLUMN lora text,
    ADD COLUMN deleted_at double precision,
    ADD COLUMN phase text CONSTRAINT phase_known
        CHECK (phase IN ('preparing', 'optimizing', 'generating', 'encoding', 'storing')),
    ADD COLUMN retries integer NOT NULL DEFAULT 0
        CONSTRAINT retries_not_negative CHECK (retries >= 0),
    ADD COLUMN run_after double precision,
    ADD CONSTRAINT only_generating_has_phase CHECK (phase IS NULL OR status = 'generating');

-- An owner's jobs, newest first (the list endpoints); deleted jobs are never listed.
DROP INDEX jobs_owner;
CREATE INDEX jobs_owner_newest ON jobs (owner, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- The storage keys of the input images a job refers to: retention asks which are in use.
CREATE TABLE job_inputs (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    PRIMARY KEY (job_id, key)
);

CREATE INDEX job_inputs_key ON job_inputs (key);

INSERT INTO job_inputs (job_id, key)
SELECT id, request #>> '{first_frame,key}' FROM jobs
WHERE request #>> '{first_frame,key}' IS NOT NULL
UNION
SELECT id, request #>> '{last_frame,key}' FROM jobs
WHERE request #>> '{last_frame,key}' IS NOT NULL;

-- The event log: one row per change of a job, appended in the change's transaction. Appending
-- transactions take turns from their append to their commit (an advisory lock, see
-- ``postgres.py``), so ids are in commit order and a reader after id N misses nothing.
CREATE TABLE job_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    owner text NOT NULL,
    kind text NOT NULL CONSTRAINT event_kind_known CHECK (
        kind IN ('queued', 'started', 'progress', 'requeued', 'completed', 'error', 'cancelled')
    ),
    status text NOT NULL
        CHECK (status IN ('queued', 'generating', 'completed', 'error')),
    progress integer NOT NULL CHECK (progress BETWEEN 0 AND 100),
    phase text
        CHECK (phase IN ('preparing', 'optimizing', 'generating', 'encoding', 'storing')),
    created_at double precision NOT NULL,
    data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object')
);

-- "One job's events after id N"; "every event after id N" is the primary key.
CREATE INDEX job_events_job ON job_events (job_id, id);
-- Progress events are most of the log: the heartbeat's throttle and the pruning find them here.
CREATE INDEX job_events_progress ON job_events (job_id, id) WHERE kind = 'progress';
