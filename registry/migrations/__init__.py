"""Alembic migrations of the registry's schema (run by ``registry.store.migrate``)."""
