"""Persistence behind one interface: SQLite by default."""
