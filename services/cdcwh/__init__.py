"""cdcwh: a streaming CDC data warehouse."""

__version__ = "0.1.0"
