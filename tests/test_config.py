import pytest

from reslab.config import load_config, parse_duration
from reslab.errors import ReslabError


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["train.lr=0.01", "model.width=42", "train.nesterov=true",
                             "train.early_stopping.patience=3", "model.layers=[1,1,1]"])
    assert cfg.train.lr == 0.01 and cfg.model.width == 42 and cfg.train.nesterov is True
    assert cfg.train.early_stopping.patience == 3 and cfg.model.layers == [1, 1, 1]


@pytest.mark.parametrize("override, expected", [
    ("train.lrr=0.1", "unknown key 'train.lrr'"),
    ("bogus.key=1", "unknown key 'bogus'"),
    ("train.lr=abc", "train.lr = 'abc'"),
    ("train.lr=-1", "greater than 0"),
    ("train.optimizer=rmsprop", "'sgd', 'adam', 'adamw' or 'adadelta'"),
    ("data.val_fraction=1.5", "less than 1"),
    ("data.augment=magic", "expected one of none, flip"),
    ("train.time_budget=soon", "expected a duration"),
    ("train.epochs=0", "greater than or equal to 1"),
])
def test_bad_values_name_key_value_and_expectation(override, expected):
    with pytest.raises(ReslabError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ReslabError, match="bad.yaml.*invalid YAML"):
        load_config(bad)
    with pytest.raises(ReslabError, match="missing.yaml not found"):
        load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ReslabError, match=r"typo.yaml: unknown key 'train.epoch'"):
        load_config(typo)


def test_set_requires_key_value():
    with pytest.raises(ReslabError, match="expected KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_folder_source_requires_root():
    with pytest.raises(ReslabError, match="data.root is required"):
        load_config(None, ["data.source=folder"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=0.02", "name=x"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("1.5h", 5400),
                                           ("1h30m", 5400), (45, 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
