"""End-to-end tests with a real qemu guest under libvirtd (``tox -e nova``).

unittest-based, like the nova suite they run beside: the guest's events go
through the real service, RabbitMQ and the nova adapter.
"""
