"""What is kept in Redis besides the queue: images and records, the outbox, member settings, the audit log, and the
embedded Redis server itself."""
