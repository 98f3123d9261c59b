"""The REST API for scripts and ML engineers: projects, items, the queue and annotations."""
