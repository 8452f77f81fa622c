"""Consumers of the job store's event log (the live stream; webhooks, metrics): each reads
``JobQueue.events_after`` from a cursor it keeps and wakes on ``on_event``, never hooking the
worker."""
