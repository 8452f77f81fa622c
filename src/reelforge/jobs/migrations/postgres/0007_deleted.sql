-- Deletion by the owner: the event log gains the kind 'deleted'. (Listing an owner's jobs in
-- creation order, either way, is migration 0005's index jobs_owner_newest.)

ALTER TABLE job_events
    DROP CONSTRAINT event_kind_known,
    ADD CONSTRAINT event_kind_known CHECK (
        kind IN (
            'queued', 'started', 'progress', 'requeued', 'completed', 'error', 'cancelled',
            'deleted'
        )
    );
