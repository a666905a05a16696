"""Alembic migrations of the care store; run them with ``presa.care.store.upgrade`` / ``downgrade``."""
