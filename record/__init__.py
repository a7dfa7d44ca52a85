"""The PostgreSQL record: schema, migrations, and the reads both the API and the persister need.

``api`` and ``persister`` both depend on this package and on ``engine``, never on each other.
"""
