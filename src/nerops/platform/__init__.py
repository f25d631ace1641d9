"""The local platform as real processes: a Prefect server, a process worker, the endpoint and the webhook receiver
under one supervisor (:mod:`nerops.platform.supervisor`), set up by :mod:`nerops.platform.setup`."""
