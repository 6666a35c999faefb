"""webhook-engine: deliver webhooks out of Postgres."""

__version__ = "0.1.0"
