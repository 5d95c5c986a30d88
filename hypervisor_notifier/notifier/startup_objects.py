"""The objects of start-up kept out of the garbage collector's full passes.

CPython's cyclic collector holds the interpreter while it runs, and a pass
over its oldest generation walks every tracked object: in the service, the
modules, configuration and clients (libvirt-python, oslo, kombu) loaded at
start, some 35,000 objects that are never garbage, which take 16-21 ms to
walk on the development machines. Such a pass comes whenever enough objects
survived younger passes, as a burst's events waiting in the outbox do:
measured during a burst, one pass held the libvirt callbacks and the
dispatch thread for 39 ms, the burst's worst commits. Frozen
(``gc.freeze``), those objects are left out of every later pass; objects
made afterwards, the events included, are collected as before.
"""

from __future__ import annotations

import gc


def freeze() -> int:
    """Collect what start-up left, then freeze every object alive now; return how many.

    Call once start-up is done (configuration read, modules imported),
    before the threads start: the collection holds the interpreter once.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
