"""The CPU demo's inputs and artefacts: the tiny model after its SFT warm-up, the arithmetic parquet files, the
learning curve and summary. The training itself is verl's trainer, as on a cluster (``am_rl.trainer``)."""
