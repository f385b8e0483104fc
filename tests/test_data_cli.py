"""``recompare data``: the commands, their JSON, and one clean line for bad input."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recompare.cli import main
from recompare.data import Dataset


def write_ml100k(root: Path) -> int:
    """A few lines in the GroupLens 100K layout (tab u.data, pipe latin-1 u.item, u.user)."""
    root.mkdir(parents=True)
    ratings = [(u, i, 1 + (u * i) % 5, 880000000 + u * 100 + i) for u in range(1, 6)
               for i in range(1, 8) if (u + i) % 3]
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    flags = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)  # Drama
    (root / "u.item").write_bytes("".join(
        f"{i}|Film {i} \xe9t\xe9 (1996)|01-Jan-1996||http://x/{i}|{flags}\n"
        for i in range(1, 8)).encode("latin-1"))
    (root / "u.user").write_text("".join(f"{u}|{30 + u}|M|writer|0210{u}\n"
                                         for u in range(1, 6)))
    return len(ratings)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def leftovers(parent: Path) -> list[str]:
    """Temporary or partial outputs left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_synth_info_and_json(tmp_path):
    out = tmp_path / "planted"
    result = run("data", "synth", str(out), "--users", "200", "--items", "100", "--groups", "2",
                 "--cross-group-rate", "0.05", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["users"] == 200 and info["items"] == 100
    assert set(info["groups"]) == {"en", "es"}
    assert info["split"]["kind"] == "both" and info["split"]["heldout_users"] == 20
    ds = Dataset.load(out)
    assert ds.fingerprint == info["fingerprint"]
    assert ds.meta["options"]["seed"] == 3
    again = run("data", "info", str(out), "--json")
    assert json.loads(again.stdout)["fingerprint"] == info["fingerprint"]
    table = run("data", "info", str(out))
    assert table.exit_code == 0
    for word in ("users", "density", "cross-group share", "split: both", "heldout", "en"):
        assert word in table.stdout


def test_synth_without_split(tmp_path):
    result = run("data", "synth", str(tmp_path / "d"), "--users", "50", "--items", "30",
                 "--split", "none", "--json")
    assert result.exit_code == 0, result.output
    assert "split" not in json.loads(result.stdout)


def test_prepare_ml100k(tmp_path):
    n = write_ml100k(tmp_path / "ml-100k")
    out = tmp_path / "ml"
    result = run("data", "prepare", str(tmp_path / "ml-100k"), str(out), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["users"], info["items"], info["interactions"]) == (5, 7, n)
    assert info["groups"]["Drama"]["items"] == 7
    ds = Dataset.load(out)
    assert ds.meta["options"]["format"] == "movielens-100k"
    assert ds.item_info["title"][0] == "Film 1 \xe9t\xe9 (1996)"


def test_prepare_csv_with_options_and_temporal_split(tmp_path):
    log = tmp_path / "log.tsv"
    rows = [f"u{u}\ti{(u * 7 + k) % 13}\t{k + 1}\t{1000 + 10 * k}" for u in range(12)
            for k in range(6)]
    log.write_text("who\twhat\thow_much\twhen\n" + "\n".join(rows) + "\n")
    out = tmp_path / "ds"
    result = run("data", "prepare", str(log), str(out), "--user-col", "who", "--item-col",
                 "what", "--value-col", "how_much", "--time-col", "when", "--split",
                 "temporal", "--last-n", "2", "--min-rating", "2", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["interactions"] == 12 * 5
    assert info["split"]["test"] == 12 * 2 and info["split"]["last_n"] == 2
    ds = Dataset.load(out)
    assert ds.meta["options"]["min_rating"] == 2


def test_mirror_command(tmp_path):
    assert run("data", "synth", str(tmp_path / "a"), "--users", "100", "--items", "60",
               "--groups", "1").exit_code == 0
    result = run("data", "mirror", str(tmp_path / "a"), str(tmp_path / "m"), "--copies", "3",
                 "--cross-rate", "0.02", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["users"] == 300 and info["items"] == 180
    assert set(info["groups"]) == {"c0", "c1", "c2"}
    assert info["cross_group_share"] == pytest.approx(0.02, abs=0.005)


# ------------------------------------------------------------------ bad input
def assert_one_line_error(result, exit_codes=(1, 2), match: str = ""):
    assert result.exit_code in exit_codes, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert match.lower() in errors[0].lower(), errors[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_LOGS = {
    "non-numeric": ("user,item,rating\na,x,1\nb,y,abc\n", "non-numeric value 'abc'"),
    "nan": ("user,item,rating\na,x,1\nb,y,NaN\n", "missing or NaN"),
    "empty": ("user,item,rating\n", "no data rows"),
    "zero bytes": ("", "empty"),
    "misnamed column": ("person,thing,rating\na,x,1\n", "--user-col"),
    "one interaction per user": ("user,item\na,x\nb,y\nc,x\n", "leaves nothing to evaluate"),
}


@pytest.mark.parametrize("case", sorted(BAD_LOGS))
def test_prepare_bad_logs(tmp_path, case):
    content, match = BAD_LOGS[case]
    log = write(tmp_path / "log.csv", content)
    out = tmp_path / "out"
    result = run("data", "prepare", str(log), str(out), "--split", "random")
    assert_one_line_error(result, (1,), match)
    assert not out.exists() and leftovers(tmp_path) == []


def test_missing_column_option(tmp_path):
    log = write(tmp_path / "log.csv", "user,item,rating\na,x,1\n")
    result = run("data", "prepare", str(log), str(tmp_path / "o"), "--value-col", "stars")
    assert_one_line_error(result, (1,), "column 'stars'")
    assert not (tmp_path / "o").exists()


def test_missing_file_and_unknown_format(tmp_path):
    result = run("data", "prepare", str(tmp_path / "nope.csv"), str(tmp_path / "o"))
    assert_one_line_error(result, (1,), "no such file")
    log = write(tmp_path / "log.csv", "user,item\na,x\n")
    result = run("data", "prepare", str(log), str(tmp_path / "o"), "--format", "xml")
    assert_one_line_error(result, (2,), "xml")
    result = run("data", "prepare", str(tmp_path), str(tmp_path / "o"))
    assert_one_line_error(result, (1,), "cannot tell the format")
    result = run("data", "info", str(tmp_path / "nothing"))
    assert_one_line_error(result, (1,), "not a prepared data set")
    assert not (tmp_path / "o").exists()


def test_output_path_exists(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for args in (["synth", str(out), "--users", "20", "--items", "10"],
                 ["prepare", str(write(tmp_path / "l.csv", "user,item\na,x\n")), str(out)]):
        result = run("data", *args)
        assert_one_line_error(result, (1,), "already exists")
        assert (out / "keep.txt").read_text() == "mine"
    result = run("data", "synth", str(out), "--users", "40", "--items", "20", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "meta.json").is_file() and not (out / "keep.txt").exists()
    assert leftovers(tmp_path) == []


def test_bad_numbers_on_the_command_line(tmp_path):
    result = run("data", "synth", str(tmp_path / "s"), "--cross-group-rate", "1.5")
    assert_one_line_error(result, (2,), "cross-group-rate")
    result = run("data", "synth", str(tmp_path / "s"), "--test-fraction", "1.0")
    assert_one_line_error(result, (1,), "--test-fraction")
    result = run("data", "synth", str(tmp_path / "s"), "--groups", "5", "--items", "3")
    assert_one_line_error(result, (1,), "item per group")
    assert not (tmp_path / "s").exists() and leftovers(tmp_path) == []


def test_temporal_split_needs_timestamps(tmp_path):
    log = write(tmp_path / "l.csv", "user,item\na,x\na,y\nb,x\nb,y\n")
    result = run("data", "prepare", str(log), str(tmp_path / "o"), "--split", "temporal")
    assert_one_line_error(result, (1,), "needs timestamps")


def test_split_command_resplits_a_saved_data_set(tmp_path):
    made = run("data", "synth", str(tmp_path / "a"), "--users", "80", "--items", "40")
    assert made.exit_code == 0
    result = run("data", "split", str(tmp_path / "a"), str(tmp_path / "b"), "--split", "temporal",
                 "--last-n", "2", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["split"]["kind"] == "temporal" and info["split"]["test"] == 80 * 2
    original, resplit = Dataset.load(tmp_path / "a"), Dataset.load(tmp_path / "b")
    assert (original.interactions != resplit.interactions).nnz == 0
    assert original.fingerprint != resplit.fingerprint
    none = run("data", "split", str(tmp_path / "a"), str(tmp_path / "c"), "--split", "none")
    assert none.exit_code == 0 and Dataset.load(tmp_path / "c").split is None


def test_prepare_with_side_tables_on_the_command_line(tmp_path):
    log = write(tmp_path / "log.csv", "user,item\na,x\na,y\nb,y\nb,z\nc,x\nc,z\n")
    write(tmp_path / "items.csv", "item,lang,title\nx,en,X\ny,fr,Y\nz,fr,Z\n")
    write(tmp_path / "users.csv", "user,lang,age,city\na,en,30,Paris\nb,fr,40,Lyon\n")
    result = run("data", "prepare", str(log), str(tmp_path / "o"), "--items",
                 str(tmp_path / "items.csv"), "--group-col", "lang", "--users",
                 str(tmp_path / "users.csv"), "--user-group-col", "lang", "--feature-cols",
                 "age", "--split", "none", "--json")
    assert result.exit_code == 0, result.output
    ds = Dataset.load(tmp_path / "o")
    assert ds.group_names == ("fr", "en")  # by size
    assert ds.user_groups.tolist() == [1, 0, -1]
    assert list(ds.user_features.columns) == ["age"]
    assert ds.item_info["title"].tolist() == ["X", "Y", "Z"]


def test_temporal_global_split_on_the_command_line_and_in_a_comparison(tmp_path):
    from recompare.compare import Variant, run_comparison

    out = tmp_path / "planted"
    assert run("data", "synth", str(out), "--users", "300", "--items", "120", "--split",
               "none").exit_code == 0
    result = run("data", "split", str(out), str(tmp_path / "tg"), "--split", "temporal-global",
                 "--cutoff", "0.75", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["split"]
    assert info["kind"] == "temporal-global" and info["cutoff_fraction"] == 0.75
    assert info["test"] > 0 and "weak" in info["protocols"]
    assert_one_line_error(run("data", "split", str(out), str(tmp_path / "x"), "--split",
                              "temporal-global"), match="--cutoff")
    assert_one_line_error(run("data", "split", str(out), str(tmp_path / "y"), "--split",
                              "temporal-global", "--cutoff", "someday"), match="someday")
    ds = Dataset.load(tmp_path / "tg")
    variants = [Variant("WALS", "wals", {"iterations": 2, "dim": 8}, "wals"),
                Variant("DNN", "softmax", {"epochs": 2, "dim": 8, "hidden": (16,)}, "dnn"),
                Variant("popularity", "popularity", {}, "baseline")]
    results = run_comparison(ds, variants=variants, serving_queries=10)
    assert results["table"] and set(results["models"]) == {"WALS", "DNN", "popularity"}
