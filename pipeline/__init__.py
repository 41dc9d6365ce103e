"""Frames, ordering, cancellation, session logic, graph wiring and the CLI."""
