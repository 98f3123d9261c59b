"""The curation app has no models yet, so nothing to register in the admin."""
