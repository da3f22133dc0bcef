"""Storage behind a small protocol; one SQLAlchemy Core implementation for SQLite and PostgreSQL."""
