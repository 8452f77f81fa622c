-- Webhooks: a default endpoint and a signing secret per API key, the outbox of deliveries
-- derived from the event log (one row per event and endpoint), and every attempt of each.

ALTER TABLE api_keys ADD COLUMN webhook_url TEXT;
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT
    CONSTRAINT webhook_secret_shape CHECK (webhook_secret LIKE 'whsec_%');

-- How far the deriver has read the event log; it starts at the log's end (no old events).
CREATE TABLE webhook_cursor (
    name TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL CHECK (event_id >= 0)
);

INSERT INTO webhook_cursor (name, event_id)
SELECT 'webhooks', COALESCE(MAX(id), 0) FROM job_events;

-- One delivery of one event to one endpoint. ``id`` is its ``webhook-id`` (the same on every
-- attempt). ``pending`` until a 2xx answer (``delivered``) or 24 h of failures (``failed``);
-- a sender holds it with a lease (token + expiry) while it sends.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL CHECK (json_type(body) = 'object'),
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_at REAL NOT NULL,
    lease_token TEXT,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    UNIQUE (event_id, url),
    CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL)),
    CHECK (lease_token IS NULL OR state = 'pending')
);

-- The senders' claim: pending deliveries that are due; the head of each (job, endpoint) line.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (job_id, url, event_id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    at REAL NOT NULL,
    status_code INTEGER,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;
