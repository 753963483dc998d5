# Public test helpers for users' actor test suites (the pytest plugin itself loads automatically).
from ._testing.plugin import DEFAULT_TEST_TIMEOUT, actor_test

__all__ = ['DEFAULT_TEST_TIMEOUT', 'actor_test']
