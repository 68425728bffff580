import csv
import json

import pytest

import reslab


@pytest.fixture
def numeric_run(tmp_path, make_tree, fast_config):
    """A run trained on class folders named 1..11 (string sort would put 10 before 2)."""
    names = [str(i) for i in range(1, 12)]
    root = make_tree(classes=names, per_class=8, size=8)
    cfg = fast_config(data={"source": "folder", "root": str(root), "val_fraction": 0.25,
                            "test_fraction": 0.0, "augment": "none"},
                      train={"epochs": 12, "lr": 0.05, "batch_size": 16})
    reslab.train(cfg, out=tmp_path / "run", quiet=True)
    return tmp_path / "run", root, names


def test_predict_writes_class_names_in_natural_order(numeric_run, tmp_path, cli):
    run, root, names = numeric_run
    assert json.loads((run / "classes.json").read_text()) == names
    # An unlabeled folder: copies of known images under neutral names.
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    truth = {}
    for name in ("2", "10", "11"):
        src = root / name / "0.png"
        dst = unlabeled / f"img_{name}.png"
        dst.write_bytes(src.read_bytes())
        truth[str(dst)] = name
    code, out, err = cli("predict", run, unlabeled, "--out", tmp_path / "preds.csv")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "preds.csv")))
    assert [list(r) for r in rows[:1]] == [["path", "label", "confidence"]]
    assert {r["path"]: r["label"] for r in rows} == truth
    assert all(0 < float(r["confidence"]) <= 1 for r in rows)


def test_eval_on_a_labeled_tree_with_other_folder_order(numeric_run, tmp_path, cli):
    run, root, _ = numeric_run
    # A tree with only some classes: labels map by name, not by position.
    other = tmp_path / "other"
    for name in ("11", "3"):
        (other / name).mkdir(parents=True)
        for i in range(3):
            (other / name / f"{i}.png").write_bytes((root / name / f"{i}.png").read_bytes())
    code, out, err = cli("eval", run, "--data-root", other, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 6 and res["accuracy"] == 1.0
    # recall is the per-class accuracy; a class absent from the tree has none
    assert res["per_class"]["11"]["recall"] == 1.0 and res["per_class"]["1"]["recall"] is None
    assert res["per_class"]["1"]["support"] == 0 and res["per_class"]["3"]["support"] == 3
    matrix = (run / "confusion_matrix.csv").read_text().splitlines()
    assert matrix[0].split(",")[:3] == ["true\\pred", "1", "2"]


def test_eval_unknown_class_folder_is_refused(numeric_run, tmp_path, cli):
    run, root, _ = numeric_run
    (tmp_path / "x" / "12").mkdir(parents=True)
    (tmp_path / "x" / "12" / "0.png").write_bytes((root / "1" / "0.png").read_bytes())
    (tmp_path / "x" / "1").mkdir()
    (tmp_path / "x" / "1" / "0.png").write_bytes((root / "1" / "0.png").read_bytes())
    code, _, err = cli("eval", run, "--data-root", tmp_path / "x")
    assert code == 2 and "12" in err and "not classes of this run" in err
    assert len(err.strip().splitlines()) == 1


def test_eval_split_matches_training_and_prints_per_class(tmp_path, fast_config, cli):
    result = reslab.train(fast_config(), out=tmp_path / "r", quiet=True)
    code, out, _ = cli("eval", tmp_path / "r", "--split", "test", "--json")
    res = json.loads(out)
    assert code == 0 and res["accuracy"] == pytest.approx(result["test_acc"], abs=1e-6)
    assert set(res["per_class"]) == {str(i) for i in range(10)}
    assert sum(m["support"] for m in res["per_class"].values()) == res["n"]
    code, out, _ = cli("eval", tmp_path / "r")
    assert code == 0 and out.startswith("test: accuracy") and "confusion_matrix.csv" in out
    rows = {line.split()[0] for line in out.splitlines() if len(line.split()) == 5}
    assert {str(i) for i in range(10)} <= rows  # a per-class row for each class


def test_checkpoint_of_another_architecture_is_refused(tmp_path, fast_config, cli):
    reslab.train(fast_config(train={"epochs": 1}), out=tmp_path / "r", quiet=True)
    cfg = (tmp_path / "r" / "config.yaml").read_text().replace("width: 8", "width: 16")
    (tmp_path / "r" / "config.yaml").write_text(cfg)
    code, _, err = cli("eval", tmp_path / "r")
    assert code == 2 and "best.pt does not fit the configured model" in err
    assert len(err.strip().splitlines()) == 1


def test_predict_errors(tmp_path, fast_config, cli):
    reslab.train(fast_config(train={"epochs": 1}), out=tmp_path / "r", quiet=True)
    code, _, err = cli("predict", tmp_path / "r", tmp_path / "nothing", "--out", tmp_path / "p.csv")
    assert code == 2 and "nothing does not exist" in err
    code, _, err = cli("predict", tmp_path / "nope", tmp_path, "--out", tmp_path / "p.csv")
    assert code == 2 and "not a run directory" in err
