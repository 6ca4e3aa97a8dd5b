"""The receiver app: its receivers module is found by autodiscovery (no -A)."""
