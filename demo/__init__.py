"""A throwaway local setup to try the bridge: ``python -m demo``."""
