"""Tests of the nova adapter against nova itself (``tox -e nova``).

nova's TestCase classes need unittest (or stestr), not pytest. Importing
``nova.tests.functional`` applies nova's concurrency mode: eventlet unless
``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``; tox runs these tests in both modes.
"""

# nova.tests.functional applies the concurrency mode; it must run before
# anything imports eventlet (nova.test imports futurist, which tries to).
import nova.tests.functional  # noqa: F401
