"""A small application used by the cross-process tests: signals, receivers, a recorder."""
