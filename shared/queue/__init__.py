"""The queue and its control: enqueueing through RQ, per-member limits, fair share, ETA, admin actions, metrics."""
