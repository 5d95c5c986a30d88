"""The notifier service and what only it runs.

The service (:mod:`.service`) stamps what a backend observed and puts it in
the outbox (:mod:`.outbox`, :mod:`.outbox_sqlite`); the publisher
(:mod:`.publisher`) sends the outbox to the broker with pipelined confirms.
Resyncs (:mod:`.resync`), health and metrics (:mod:`.health`) and the
preflight checks (:mod:`.preflight`) live here too. The consumer library
never imports this package.
"""
