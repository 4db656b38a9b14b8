"""The catalog's schema history: Alembic revisions under `versions/`, run by `core.db.migrate`.

`env.py` takes the connection (and the target metadata) from the Alembic config's attributes, so
the same migrations run at engine creation, from `studio db upgrade` and in tests; nothing here
reads an `alembic.ini`.

The revision is kept in `studio_schema_version`, not Alembic's default `alembic_version`: MLflow's
own migrations use that name, and a database shared with MLflow must not pass its revision off as
the catalog's.
"""

VERSION_TABLE = "studio_schema_version"
