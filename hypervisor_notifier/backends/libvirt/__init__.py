"""The libvirt backend (install the ``libvirt`` extra for libvirt-python)."""
