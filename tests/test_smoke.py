"""The first minute of a new user: ingest, retry, conflict, exit codes."""

from conftest import event, write_ndjson


def test_first_event_then_retry_is_a_duplicate(cli, tmp_path):
    path = write_ndjson(tmp_path / "e.ndjson", [event(1)])
    first = cli("ingest", path, "--json")
    assert first.returncode == 0, first
    assert first.json() == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 0, "errors": []}
    again = cli("ingest", path, "--json")
    assert again.returncode == 0
    assert again.json()["duplicates"] == 1 and again.json()["accepted"] == 0


def test_same_id_different_quantity_is_a_conflict_and_exit_1(cli, tmp_path):
    cli("ingest", write_ndjson(tmp_path / "a.ndjson", [event(1, quantity=18450)]))
    result = cli("ingest", write_ndjson(tmp_path / "b.ndjson", [event(1, quantity=18451)]), "--json")
    assert result.returncode == 1
    doc = result.json()
    assert (doc["accepted"], doc["conflicts"]) == (0, 1)
    assert doc["errors"][0]["outcome"] == "conflict"
    assert doc["errors"][0]["line"] == 1
    assert "quantity" in doc["errors"][0]["reason"]
