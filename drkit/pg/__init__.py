"""PostgreSQL: connections, client binaries, subprocess wrappers and scratch clusters."""
