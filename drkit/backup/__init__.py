"""Backups: logical and physical backups, retention and prune, verify, copies (the
catalog that lists them, their manifests and order, is :mod:`drkit.catalog`)."""
