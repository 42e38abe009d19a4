"""faust agents, one per file, each a thin wrapper around a pure core in ``models``."""
