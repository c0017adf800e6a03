"""Results records: the typed, versioned JSON every evaluation writes (see :mod:`.record`)."""
