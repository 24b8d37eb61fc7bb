"""Repositories: a small storage contract (put/get/list/delete/head) and its backends."""
