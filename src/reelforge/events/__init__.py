"""Consumers of the event log: what reacts to a job's changes (webhooks, MiniMax's callback
check). They read the log and the outbox, never the worker."""
