"""Restore drills: restore into a scratch cluster, measure RTO/RPO, validate, report."""
