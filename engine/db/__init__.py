"""The only code that talks to Postgres, and its named SQL."""
