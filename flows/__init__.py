"""Prefect flows: the self-improvement loop and one iteration."""
