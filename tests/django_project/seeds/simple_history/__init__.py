"""Stand-in package for the seed project's ``signals`` module."""
