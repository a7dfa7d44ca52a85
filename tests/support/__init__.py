"""What the tests share besides fixtures: waiting on a condition, free ports.

``conftest.py`` holds fixtures only; helpers every kind of test needs live here,
once (they were written three and four times, raising different exceptions).
"""

from tests.support.network import free_port
from tests.support.waiting import wait_for, wait_until, wait_until_async

__all__ = ["free_port", "wait_for", "wait_until", "wait_until_async"]
