"""Prefect flows and the `avatarflow` command line."""
