"""Shadows the real hiredis: put this directory first on PYTHONPATH to run without it.

redis-py and sigbroker both import hiredis inside ``try``/``except ImportError``
and fall back to pure Python, which is the path a user gets when hiredis does
not import on their platform.
"""

raise ImportError("hiredis is made unimportable by tests/no_hiredis")
