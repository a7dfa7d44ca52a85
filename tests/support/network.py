"""Ports on the loopback interface: the product's own helper (the demo picks its ports with it)."""

from predmarket.services import free_port

__all__ = ["free_port"]
