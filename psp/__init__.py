"""PartySIP: a SIP registrar, location service, redirect server and stateful proxy.

The package is split into a pure core (errors, uri, headers, message, parser, timers,
transaction, proxy, plugins) that never touches sockets, threads, queues, clocks, DNS,
Prometheus or configobj, and a thin rim of threads around it (transport, processor,
resolver, metrics, config, server, cli).  See docs/architecture.md.
"""

__version__ = "0.1.0"
