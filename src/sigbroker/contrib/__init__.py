"""Integrations with frameworks; each lives in its own package and imports its framework.

Nothing outside ``sigbroker.contrib`` imports them: the core works without them.
"""
