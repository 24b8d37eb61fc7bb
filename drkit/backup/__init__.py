"""Backups: logical and physical backups, the manifest catalog, retention."""
