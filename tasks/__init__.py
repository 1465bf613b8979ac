"""Prefect tasks: one thin wrapper per step of the selfloop core."""
