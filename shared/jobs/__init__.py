"""The job contract: the spec the bot enqueues and the worker runs, the record a finished job leaves, follow-ups."""
