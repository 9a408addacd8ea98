"""The production store: PostgreSQL through asyncpg, one module per role of the store (as storage/sqlite).

Each role is a mixin over the one pool (connection.py: `_tx`, `_read`, migrations from schema.py).
"""
