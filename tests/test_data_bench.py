"""`bench data`: its synthetic log, and its figures at tiny scale (no timing asserted)."""
import numpy as np

from recompare.bench import data as bench


def test_synthetic_log_has_one_row_per_pair_and_the_asked_shape():
    log = bench.synthetic_log(5_000, 300, 200, seed=1)
    assert len(log) == 5_000
    assert not log.duplicated(["user_id", "item_id"]).any()
    assert log["user_id"].between(1, 300).all() and log["item_id"].between(1, 200).all()
    assert set(np.unique(log["rating"])) <= {k / 2 for k in range(1, 11)}
    # popularity is skewed: the first tenth of the items gets more than a tenth of the rows
    assert (log["item_id"] <= 20).mean() > 0.2
    assert log.equals(bench.synthetic_log(5_000, 300, 200, seed=1))


def test_tiny_run_reports_both_ratios_and_the_load_ratio():
    messages = []
    result = bench.run("tiny", callback=lambda event: messages.append(event["message"]))
    assert result["rows"] == bench.SIZES["tiny"]["rows"]
    names = [figure["name"] for figure in result["figures"]]
    assert names[:3] == ["prepare / (pandas read + CSR)", "prepare peak memory / pandas read",
                         "load / raw read"]
    for figure in result["figures"][:3]:
        assert figure["value"] > 0 and figure["target"] in (2.0, 3.0)
        assert isinstance(figure["met"], bool)
    assert result["prepared_bytes_on_disk"] > 0 and messages
