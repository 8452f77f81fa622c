-- Cancellation: when a client asked to cancel a running job.

ALTER TABLE jobs ADD COLUMN cancel_requested_at REAL;
