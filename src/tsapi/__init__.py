"""tsapi: an HTTP API for time-series sensor readings, stored in PostgreSQL."""

__version__ = "0.1.0"
