"""Restores: logical restore and physical point-in-time recovery."""
