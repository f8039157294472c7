"""Small verl-schema rows for the data-pipeline tests."""

import json

import pytest

from am_rl.data.ingest import IngestOptions, ingest


@pytest.fixture
def make_rows(tmp_path):
    """``make_rows(records, source="arithmetic")`` -> verl rows ingested from flat records (ids "<source>:<n>")."""

    def make(records, source="arithmetic"):
        path = tmp_path / f"{source}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        rows, report = ingest([path], IngestOptions())
        assert report.dropped == [], report.dropped
        return rows

    return make
