"""Data: synthetic arithmetic for the CPU demo and tests (arithmetic), the pipeline in front of the trainer
(`python -m am_rl.data ingest|clean|distill|select|stage2`), and the loader that feeds its parquet to the CPU demo
(problems)."""
