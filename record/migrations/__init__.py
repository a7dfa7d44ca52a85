"""Alembic migrations of the PostgreSQL record (run by ``predmarket migrate``)."""
