"""The sender app: orders, and the signal sent when one is created."""
