"""Everything the service keeps in Redis: jobs and their events, the queue, signals, the pool's
slots, leases, uploads, counters; the only package that knows a key's name."""
