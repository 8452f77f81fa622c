"""Consumers of the job store's event log: what reacts to a job's changes (webhooks and
MiniMax's callback check, the live stream, metrics). Each reads ``JobQueue.events_after`` (or the
outbox) and wakes on ``on_event``, never hooking the worker."""
