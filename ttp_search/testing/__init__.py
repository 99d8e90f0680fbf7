"""Testing tools: ground truths and services the tests and benchmarks run against.

- :func:`linearized_sgd`: SGD on the exact linearization of a network (what the linearized
  SDE must reproduce before it is compared with real fine-tuning).
- :func:`throwaway_postgres`: a private PostgreSQL server for distributed studies.
"""

from ttp_search.testing.linearized import linearized_sgd, shuffled_batches
from ttp_search.testing.postgres import (
    PostgresServer,
    PostgresUnavailableError,
    find_pg_bin,
    start_postgres,
    throwaway_postgres,
)

__all__ = [
    "PostgresServer",
    "PostgresUnavailableError",
    "find_pg_bin",
    "linearized_sgd",
    "shuffled_batches",
    "start_postgres",
    "throwaway_postgres",
]
