"""The delivery bench, run as `.venv/bin/python bench/throughput.py`: see throughput.py."""


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""
