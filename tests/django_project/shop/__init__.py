"""The sender app: orders, and the signals sent about them."""
