"""``recompare recommend``, ``load_model`` without a data set, and ``export`` of held-out rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.commands.recommend import parse_item_list, recommend_users
from recompare.data.dataset import Dataset
from recompare.data.splits import split
from recompare.data.synth import planted
from recompare.errors import RecompareError
from recompare.models import load_model
from recompare.models.softmax import SoftmaxDNN
from recompare.models.wals import WALS


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    data = split(planted(n_users=240, n_items=120, n_groups=3, interactions_per_user=15,
                         seed=5), "both", seed=1)
    data.save(root / "data")
    WALS(dim=8, iterations=4, threads=1).fit(data).save(root / "wals")
    SoftmaxDNN(epochs=1, patience=None, validation_fraction=0.0, threads=1, hidden=(16,), dim=8,
               batch_size=64).fit(data).save(root / "dnn")
    return root


@pytest.fixture(scope="module")
def data(paths):
    return Dataset.load(paths / "data")


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _training_user(data) -> int:
    held = set(data.split.heldout_users.tolist())
    return next(u for u in range(data.n_users)
                if u not in held and data.train[u].nnz and data.split.test[u].nnz)


def test_known_user_json_matches_the_model(paths, data):
    user = _training_user(data)
    uid = data.users.ids[user]
    result = run("recommend", paths / "wals", paths / "data", "--user", uid, "-k", 7, "--json")
    assert result.exit_code == 0, result.output
    (view,) = json.loads(result.stdout)["users"]
    assert view["user"] == uid and view["status"] == "training"
    trained = set(data.items.external(data.train[user].indices))
    assert {row["item"] for row in view["history"]} == trained
    model = load_model(paths / "wals", data)
    ids, scores = model.recommend(users=[user], k=7)
    assert [row["item"] for row in view["recommendations"]] == list(data.items.external(ids[0]))
    np.testing.assert_allclose([row["score"] for row in view["recommendations"]], scores[0],
                               rtol=1e-6)
    assert not trained & {row["item"] for row in view["recommendations"]}
    test_items = set(data.items.external(data.split.test[user].indices))
    for row in view["recommendations"]:
        assert row["held_out"] == (row["item"] in test_items)
        index = data.items.index(row["item"])[0]
        assert row["title"] == data.item_info["title"].iloc[index]
        assert row["group"] == data.group_names[data.item_groups[index]]


@pytest.mark.parametrize("model_dir", ["wals", "dnn"])
def test_heldout_and_new_users_are_folded_in(paths, data, model_dir):
    user = int(data.split.heldout_users[0])
    new_items = list(data.items.ids[[3, 10, 42]])
    result = run("recommend", paths / model_dir, paths / "data", "--user", data.users.ids[user],
                 "--history", ",".join(new_items), "--json")
    assert result.exit_code == 0, result.output
    held, new = json.loads(result.stdout)["users"]
    model = load_model(paths / model_dir, data)
    features = data.user_features.iloc[[user]].reset_index(drop=True)
    ids, _ = model.recommend_new(data.split.foldin[user], features, k=10)
    assert held["status"] == "held-out"
    assert [row["item"] for row in held["recommendations"]] == list(data.items.external(ids[0]))
    assert {row["item"] for row in held["history"]} == set(
        data.items.external(data.split.foldin[user].indices))
    assert new["status"] == "new" and sorted(r["item"] for r in new["history"]) == sorted(new_items)
    recommended = [row["item"] for row in new["recommendations"]]
    assert len(recommended) == 10 and not set(recommended) & set(new_items)


def test_history_file_equals_history_option(paths, data, tmp_path):
    items = list(data.items.ids[[1, 2, 5, 8]])
    file = tmp_path / "liked.txt"
    file.write_text(f"# my favourites\n{items[0]}, {items[1]}\n{items[2]} {items[3]}\n")
    a = run("recommend", paths / "wals", paths / "data", "--history-file", file, "--json")
    b = run("recommend", paths / "wals", paths / "data", "--history", ",".join(items), "--json")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.stdout)["users"] == json.loads(b.stdout)["users"]
    assert parse_item_list("a, b\n# c\nd e  # f") == ["a", "b", "d", "e"]


@pytest.mark.parametrize("args, message", [
    (["--user", "nobody", "--user", "ghost"], "unknown user ids in data: nobody, ghost"),
    (["--history", "i1,not-an-item"], "unknown item id in data: not-an-item"),
    (["--history", " , "], "history is empty"),
    ([], "name at least one --user ID"),
    (["--user", "u1", "-k", "100000"], "larger than the catalogue"),
])
def test_bad_input_is_one_line(paths, args, message):
    result = run("recommend", paths / "wals", paths / "data", *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_model_of_another_data_set_is_refused(paths, tmp_path):
    other = split(planted(n_users=100, n_items=120, n_groups=3, seed=9), "random", seed=1)
    other.save(tmp_path / "other")
    result = run("recommend", paths / "wals", tmp_path / "other", "--user", "u1")
    assert result.exit_code == 1 and "trained on another data set" in result.output


@pytest.mark.parametrize("columns", [80, 200])
def test_table_shows_every_score_within_the_width(paths, data, columns):
    user = _training_user(data)
    args = ("recommend", paths / "wals", paths / "data", "--user", data.users.ids[user],
            "--history", ",".join(data.items.ids[:4]), "-k", 12)
    result = run(*args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    payload = json.loads(run(*args, "--json").stdout)
    for view in payload["users"]:
        for row in view["recommendations"]:
            assert f"{row['score']:.4g}" in result.stdout
            rank_lines = [line for line in lines if f" {row['group']} " in line]
            assert rank_lines
    if columns >= 200:  # side by side, nothing cut
        assert "…" not in result.stdout
        assert all(row["title"] in result.stdout for row in payload["users"][0]["recommendations"])


def test_piped_output_without_columns_gets_120(paths, data, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    result = run("recommend", paths / "wals", paths / "data", "--user",
                 data.users.ids[_training_user(data)])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 120


def test_load_model_without_data_says_to_pass_it(paths, data):
    model = load_model(paths / "wals")
    with pytest.raises(RecompareError, match=r"load_model\(path, dataset=\.\.\.\)"):
        model.recommend(users=[0], k=5)
    ids, _ = model.recommend(users=[0], k=5, exclude_seen=False)
    assert ids.shape == (1, 5)
    by_path = load_model(paths / "wals", dataset=str(paths / "data")).recommend(users=[0], k=5)
    by_object = load_model(paths / "wals", dataset=data).recommend(users=[0], k=5)
    np.testing.assert_array_equal(by_path[0], by_object[0])


def test_recommend_users_library_call(paths, data):
    model = load_model(paths / "wals", data)
    views = recommend_users(model, data, [data.users.ids[0]], history=[data.items.ids[0]], k=3)
    assert [view.status for view in views][-1] == "new"
    assert all(len(view.recommendations) == 3 for view in views)


def test_export_fills_heldout_wals_rows_by_fold_in(paths, data, tmp_path):
    held = data.split.heldout_users
    bare = run("export", paths / "wals", tmp_path / "bare.npz", "--json")
    assert bare.exit_code == 0, bare.output
    note = json.loads(bare.stdout)["users_without_training"]
    assert note["count"] == len(held) and "zero" in note["rows"]
    with np.load(tmp_path / "bare.npz", allow_pickle=False) as arrays:
        assert not arrays["user_factors"][held].any()
    full = run("export", paths / "wals", tmp_path / "full.npz", "--dataset", paths / "data")
    assert full.exit_code == 0, full.output
    assert f"{len(held):,} users have no training interactions" in full.stdout
    model = load_model(paths / "wals", data)
    expected = model.embed_new_users(data.split.foldin[held],
                                     data.user_features.iloc[held].reset_index(drop=True))
    with np.load(tmp_path / "full.npz", allow_pickle=False) as arrays:
        np.testing.assert_allclose(arrays["query_embeddings"][held], expected, rtol=1e-5)
        np.testing.assert_array_equal(arrays["user_factors"], arrays["query_embeddings"])
        trained = np.setdiff1d(np.arange(data.n_users), held)
        np.testing.assert_array_equal(arrays["user_factors"][trained],
                                      model.user_factors_[trained])
