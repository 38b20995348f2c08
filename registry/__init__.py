"""The registry of persona versions: personas, their published PersonaPacks and build jobs.

Embedded by default (a SQLite file and a content-addressed directory under the registry root,
nothing to start), real servers at scale (PostgreSQL and an S3-compatible object store, by
config). The same API three ways: ``core.Registry`` in-process, ``service`` over HTTP, and
``client.RegistryClient`` speaking that HTTP; ``client.open_registry(config)`` picks one.
"""
