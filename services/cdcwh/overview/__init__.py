"""Read-only overviews of the pipeline as typed values: ``status`` (lag, batches, freshness, quarantine, and
whether each part answers) and ``layers`` (rows per layer, the demo's summary). The commands print them; tests
and probes use the values directly."""
