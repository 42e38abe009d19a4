"""Test oracles: simple per-user forms of the production rules."""
