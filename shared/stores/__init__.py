"""What outlives a job: finished jobs' results (images and records, ``results``), the outbox, member settings, the
audit log, the Redis connection and the embedded Redis server itself."""
