"""The management REST API (aiohttp.web): one module per resource; one middleware each for
errors and auth."""
