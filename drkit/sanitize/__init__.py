"""Sanitize: rule-driven anonymizing copies from a higher environment to a lower one."""
