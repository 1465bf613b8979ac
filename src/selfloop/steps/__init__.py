"""The loop's steps. Each is a function from input files to output files; the CLI, the
plain loop and (later) Prefect tasks and DVC stages all call these same functions."""
