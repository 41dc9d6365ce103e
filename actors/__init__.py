"""One Ray actor per pipeline stage."""
