"""Persistence: SQLAlchemy tables, the engine/session wrapper and Alembic migrations."""
