"""nalox: the thin top layer that dispatches to each room's command line and composes rooms (demo, fleet)."""

__version__ = "0.1.0"
