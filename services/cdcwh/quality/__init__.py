"""Data quality: tests beside the models, gates, profiling and anomalies (docs/data-quality.md)."""
