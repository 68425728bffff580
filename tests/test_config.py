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


# ----------------------------------------------------------------------------- paths
FALLBACK = ("is relative to the current folder; paths in a config are relative to the "
            "config's own folder (this fallback will be removed)")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """tmp/cfgs/ holds the config files, tmp/work/ is the current folder."""
    for folder in ("cfgs", "work"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def write_yaml(path, mapping):
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_a_files_relative_paths_are_relative_to_its_folder_and_win(project, capsys):
    (project / "cfgs" / "imgs").mkdir()
    (project / "work" / "imgs").mkdir()  # the same name in the current folder: not used
    (project / "cfgs" / "sub" / "imgs").mkdir(parents=True)
    write_yaml(project / "cfgs" / "sub" / "base.yaml",
               {"data": {"source": "folder", "root": "imgs"}, "model": {"pretrained": "w.pt"}})
    config = write_yaml(project / "cfgs" / "c.yaml", {"base": "sub/base.yaml",
                                                    "data": {"cache_dir": "cache"}})
    cfg = load_config(config)
    assert cfg.data.root == str(project / "cfgs" / "sub" / "imgs")   # the base's own folder
    assert cfg.data.cache_dir == str(project / "cfgs" / "cache")     # missing: there anyway
    assert cfg.model.pretrained == str(project / "cfgs" / "sub" / "w.pt")
    top = write_yaml(project / "cfgs" / "top.yaml", {"base": "sub/base.yaml",
                                                     "data": {"root": "imgs"}})
    assert load_config(top).data.root == str(project / "cfgs" / "imgs")
    # --set is relative to the current folder, and stored absolute as well
    cfg = load_config(config, ["data.root=imgs", "data.cache_dir=/abs/cache"])
    assert (cfg.data.root, cfg.data.cache_dir) == (str(project / "work" / "imgs"), "/abs/cache")
    assert capsys.readouterr().err == ""


def test_a_path_only_the_current_folder_has_still_works_with_one_warning(project, cli):
    (project / "work" / "imgs").mkdir()
    config = write_yaml(project / "cfgs" / "c.yaml", {"data": {"source": "folder",
                                                               "root": "imgs"}})
    for attempt in range(2):  # the warning: once per file and key in a process
        code, out, err = cli("config", config)
        assert code == 0 and f"root: {project / 'work' / 'imgs'}\n" in out
        assert err == ("" if attempt else f"reslab config: warning: {config}: data.root = imgs "
                                          f"{FALLBACK}\n")


def test_a_path_in_neither_folder_is_the_usual_one_line_error(project, cli):
    config = write_yaml(project / "cfgs" / "c.yaml", {"data": {"source": "folder",
                                                               "root": "imgs"}})
    before = config.read_bytes()
    code, _, err = cli("train", config, "--out", project / "run")
    assert (code, err) == (2, f"reslab train: error: data.root: {project / 'cfgs' / 'imgs'} "
                              "does not exist\n")
    assert not (project / "run").exists() and config.read_bytes() == before


def test_sweep_comparison_and_study_files_resolve_paths_against_their_folder(project, capsys):
    from reslab.studies.compare import load_compare
    from reslab.studies.study_spec import load_study_plan
    from reslab.sweep.spec import load_sweep

    for name in ("a", "b", "c"):
        (project / "cfgs" / name).mkdir()
    base = {"data": {"source": "folder", "root": "a", "test_fraction": 0.2}}
    sweep = load_sweep(write_yaml(project / "cfgs" / "s.yaml", {
        "base": base, "sampler": "grid", "space": {"data.root": {"values": ["b", "/x"]}}}))
    assert sweep.base.data.root == str(project / "cfgs" / "a")
    assert sweep.spec.space["data.root"].values == [str(project / "cfgs" / "b"), "/x"]

    compare = load_compare(write_yaml(project / "cfgs" / "c.yaml", {
        "overrides": ["data.cache_dir=c"], "runs": [base, {**base, "name": "two"}]}),
        ["model.pretrained=w.pt"])
    assert {e.cfg.data.root for e in compare.entries} == {str(project / "cfgs" / "a")}
    assert {e.cfg.data.cache_dir for e in compare.entries} == {str(project / "cfgs" / "c")}
    assert {e.cfg.model.pretrained for e in compare.entries} == {str(project / "work" / "w.pt")}

    plan = load_study_plan(write_yaml(project / "cfgs" / "study.yaml", {
        "base": base, "axes": {"root": {"one": {"data.root": "b"}, "two": {}}}}),
        sets=["data.cache_dir=cache"])
    assert [v.cfg.data.root for v in plan.variants] == [str(project / "cfgs" / r)
                                                        for r in ("b", "a")]
    assert {v.cfg.data.cache_dir for v in plan.variants} == {str(project / "work" / "cache")}
    assert capsys.readouterr().err == ""
