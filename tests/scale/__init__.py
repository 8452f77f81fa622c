"""Many processes on one PostgreSQL job database, under crashes and cut connections."""
