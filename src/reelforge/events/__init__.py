"""Consumers of the job event log (``jobs.model.JobQueue.events_after``)."""
