"""Stores of the shared state that outlives a job: finished jobs' results (``shared.stores.results``)."""
