"""The example project's settings package."""
