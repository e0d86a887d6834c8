"""Comfy API v2 (`/api/v2/…`) on the service's own job store, queue, workers and pool."""
