"""`reslab study STUDY.yaml`: the whole experiment of a paper, resumable at any point.

Per variant (study_spec.py), in order, each step into its own place in the `StudyDir`:

    sweep       variants/<v>/sweep/: the sweep over the variant (run_sweep: its own resume)
    best        variants/<v>/best.yaml: the best trial's config (the variant's, without sweep)
    confirm     variants/<v>/confirm/: N seeds of it (execute/repeats.py, through the run executor)
    test        variants/<v>/test.json: each seed run's final evaluation on the test split
    robustness  each seed run's robustness.csv (the suite, display or raw mode)

Before them, the study's `prepare:` trees (once, for all variants). A finished step is listed
in variants/<v>/steps.json and never run again; an interrupted one is resumed by the code that
runs it (a sweep's trials, a repeats' runs, a conversion into prepare/<tree>.partial). Then
the tables, figures, significance, summary and report (study_outputs.py) are rewritten from
the files, so re-running a finished study only redraws them.

Confirmation seeds: train.seed + 1000 ... after a sweep (as the sweep's own confirm: never
the trial's lucky seed), train.seed ... without one; the same for every variant, so variants
pair up seed by seed in the significance tests.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml

from ..config import Config, load_config
from ..data.convert import convert_tree
from ..data.sources import list_images
from ..errors import ReslabError
from ..execute import ExecOptions, ensure_robustness, execute
from ..execute.repeats import finished_runs, member_specs, plan, write_summary
from ..models.weights import timm_cached_weights, torchvision_weights_path
from ..output import info
from ..runs.rundir import RepeatsDir, StudyDir
from ..sweep.confirm import CONFIRM_SEED_OFFSET
from ..sweep.run import run_sweep
from ..sweep.storage import close_storage, open_before
from .study_outputs import write_study_outputs
from .study_spec import SOURCE_TREE, StudyPlan, Variant, load_study_plan

Log = Callable[[str], None]
STEPS = ("sweep", "best", "confirm", "test", "robustness")
UNFINISHED_TRIALS = ("RUNNING", "WAITING")


def run_study(path: str | Path, out: str | Path | None = None, scale: str = "full",
              workers: int = 1, storage: str | None = None, only: list[str] | None = None,
              quiet: bool = False, log: Log | None = None,
              options: ExecOptions | None = None, sets: list[str] | None = None) -> Path:
    """Run (or continue) every step of every variant, then write the study's outputs.

    Each variant's steps keep their order; the confirmation runs of all variants go to the
    run executor together (`options`: workers, GPUs, backend), so they spread over them."""
    log = log or info
    options = options or ExecOptions(workers=workers, quiet=quiet)
    study_plan = load_study_plan(path, scale, StudyDir(out) if out is not None else None, sets)
    target = study_plan.out
    variants = selected(study_plan, only)
    check_weights(study_plan, variants)
    if storage is not None:  # a bad --storage: one line, before the study directory exists
        close_storage(open_before(storage, target.path))
    target.claim()
    check_same_study(target, study_plan)
    prepare_trees(study_plan, target, log)
    for variant in variants:
        run_steps(study_plan, variant, target, ("sweep", "best"), options, storage, log)
    confirm_variants(study_plan, variants, target, options, log)
    for variant in variants:
        run_steps(study_plan, variant, target, ("test", "robustness"), options, storage, log)
    write_study_outputs(study_plan, target, log)
    return target.path


def selected(study_plan: StudyPlan, only: list[str] | None) -> list[Variant]:
    if not only:
        return study_plan.variants
    names = [v.name for v in study_plan.variants]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ReslabError(f"--variants {','.join(unknown)}: not in {study_plan.path} (its "
                          f"variants: {', '.join(names)})")
    return [v for v in study_plan.variants if v.name in only]


def check_weights(study_plan: StudyPlan, variants: list[Variant]) -> None:
    """Every pretrained weight file the variants read, before anything trains: reslab never
    downloads, so missing files are one error naming them all (and where they go)."""
    missing: dict[str, list[str]] = {}
    for variant in variants:
        problem = missing_weights(variant.cfg)
        if problem:
            missing.setdefault(problem, []).append(variant.name)
    if missing:
        listed = "; ".join(f"{problem} (variant {', '.join(names)})"
                           for problem, names in missing.items())
        raise ReslabError(f"{study_plan.path}: pretrained weights missing (reslab never "
                          f"downloads): {listed}. Place the files there, set model.pretrained "
                          "to local copies, or run the other variants with --variants NAME,...")


def missing_weights(cfg: Config) -> str | None:
    """The weight file `model.pretrained` would read when it is missing, else None."""
    pretrained, arch = cfg.model.pretrained, cfg.model.arch
    if pretrained is True and arch.startswith("tv:"):
        path, _ = torchvision_weights_path(arch.removeprefix("tv:"))
        return None if path.is_file() else str(path)
    if pretrained is True and arch.startswith("timm:"):
        try:
            timm_cached_weights(arch.removeprefix("timm:"))
        except ReslabError as err:
            return str(err).removeprefix("model.pretrained: ")
    if isinstance(pretrained, str) and not Path(pretrained).expanduser().is_file():
        return pretrained
    return None


def check_same_study(target: StudyDir, study_plan: StudyPlan) -> None:
    """A study directory holds one study at one scale: refuse to mix in another."""
    old_text = target.read_plan()
    if old_text is None:
        target.write_plan(study_plan.to_yaml())
        return
    old, new = yaml.safe_load(old_text), study_plan.describe()
    if old == new:
        return
    diff = next((k for k in new if k != "variants" and old.get(k) != new[k]), None)
    if diff is None:
        diff = next((f"variant {v}" for v in new["variants"] | old["variants"]
                     if old["variants"].get(v) != new["variants"].get(v)), "variants")
    raise ReslabError(f"--out {target.path} holds another study ({diff} differs from "
                      f"{study_plan.path} at scale {study_plan.scale}); choose another --out")


# ----------------------------------------------------------------------------- prepare
def prepare_trees(study_plan: StudyPlan, target: StudyDir, log: Log) -> None:
    """prepare/source (the source, or its first per_class images per folder as links), then
    each converted tree: made in <tree>.partial and renamed when whole."""
    spec = study_plan.spec.prepare
    if spec is None:
        return
    if not target.prepared(SOURCE_TREE).exists():
        log(f"prepare: {SOURCE_TREE} from {study_plan.source}")
        link_source(study_plan.source, target, spec.per_class)
    for tree, encoding in spec.trees.items():
        final, partial = target.prepared(tree), target.prepared_partial(tree)
        if encoding == SOURCE_TREE or final.exists():
            continue
        log(f"prepare: {tree} ({encoding}) in {final}")
        convert_tree(target.prepared(SOURCE_TREE), partial, encoding, force=True)
        partial.rename(final)


def link_source(source: Path, target: StudyDir, per_class: int | None) -> None:
    if not source.is_dir():
        raise ReslabError(f"prepare.source {source}: not a folder (expected class folders of "
                          "images)")
    final, partial = target.prepared(SOURCE_TREE), target.prepared_partial(SOURCE_TREE)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    if per_class is None:
        partial.symlink_to(source, target_is_directory=True)
    else:
        taken: dict[Path, int] = {}
        for image in sorted(list_images(source)):
            folder = image.parent.relative_to(source)
            if taken.get(folder, 0) < per_class:
                taken[folder] = taken.get(folder, 0) + 1
                (partial / folder).mkdir(parents=True, exist_ok=True)
                (partial / folder / image.name).symlink_to(image)
    partial.rename(final)


# ----------------------------------------------------------------------------- variants
def run_steps(study_plan: StudyPlan, variant: Variant, target: StudyDir, steps: tuple[str, ...],
              options: ExecOptions, storage: str | None, log: Log) -> None:
    actions = {"sweep": lambda: sweep_step(study_plan, variant, target, options, storage),
               "best": lambda: best_step(variant, target),
               "test": lambda: test_step(variant, target),
               "robustness": lambda: robustness_step(study_plan, variant, target, log)}
    target.variant(variant.name).mkdir(parents=True, exist_ok=True)
    for step in steps:
        if step in target.finished_steps(variant.name):
            continue
        if (step == "sweep" and variant.sweep is None) or \
                (step == "robustness" and study_plan.spec.robustness is None):
            continue
        log(f"{variant.name}: {step}")
        actions[step]()
        target.mark_finished(variant.name, step)


def sweep_step(study_plan: StudyPlan, variant: Variant, target: StudyDir, options: ExecOptions,
               storage: str | None) -> None:
    """The variant's sweep; finished when no trial is queued or running anywhere."""
    spec = {**study_plan.spec.sweep, "base": variant.cfg.to_dict(), "name": variant.name}
    spec_path = target.write_sweep_spec(variant.name, spec)
    sweep_dir = target.sweep(variant.name)
    # A sweep shares its trials through its storage, never through --executor: local workers.
    run_sweep(spec_path, out=sweep_dir.path, storage=storage,
              options=replace(options, executor="local"),
              study_name=f"{study_plan.name}-{study_plan.scale}-{variant.name}")
    states = {row["state"] for row in sweep_dir.read_trials()}
    if states & set(UNFINISHED_TRIALS):
        raise ReslabError(f"variant {variant.name}: sweep trials are still running elsewhere "
                          f"(shared --storage); re-run the study once they finish")
    if sweep_dir.read_best() is None:
        raise ReslabError(f"variant {variant.name}: no trial of its sweep completed (see "
                          f"{sweep_dir.trials_csv}); fix the sweep and re-run")


def best_step(variant: Variant, target: StudyDir) -> None:
    """best.yaml: the sweep's best trial's config, else the variant's own config."""
    best = target.sweep(variant.name).read_best() if variant.sweep else None
    target.write_best(variant.name, best or variant.cfg.to_yaml())


def confirmation_config(study_plan: StudyPlan, variant: Variant, target: StudyDir) -> Config:
    """best.yaml over the study's confirmation seeds (see the module docstring)."""
    cfg = target.read_best(variant.name)
    if cfg is None:  # the best step ran before (steps.json); its file was removed since
        raise ReslabError(f"variant {variant.name}: config file "
                          f"{target.best_yaml(variant.name)} not found")
    raw = cfg.to_dict()
    first = variant.cfg.train.seed + (CONFIRM_SEED_OFFSET if variant.sweep else 0)
    raw["train"]["seed"] = list(range(first, first + study_plan.spec.confirm.repeats))
    return load_config(raw)


def confirm_variants(study_plan: StudyPlan, variants: list[Variant], target: StudyDir,
                     options: ExecOptions, log: Log) -> None:
    """The confirm step of every variant that needs it, as one batch of runs (each run's
    robustness rows too, when the study has a robustness step)."""
    todo = [v for v in variants if "confirm" not in target.finished_steps(v.name)]
    robustness = study_plan.spec.robustness
    hook = (robustness.suite, robustness.raw) if robustness is not None else None
    specs = []
    for variant in todo:
        log(f"{variant.name}: confirm")
        cfg = confirmation_config(study_plan, variant, target)
        repeats = RepeatsDir.create(cfg, target.confirmation(variant.name).path)
        repeats.write_plan(cfg)
        specs += member_specs(repeats, plan(cfg), f"{variant.name}/", hook)
    execute(specs, options, log)
    for variant in todo:
        write_summary(target.confirmation(variant.name))
        target.mark_finished(variant.name, "confirm")


def test_step(variant: Variant, target: StudyDir) -> None:
    """test.json: each seed run's final evaluation, which must be on the test split."""
    repeats = target.confirmation(variant.name)
    found = {}
    for member, run in finished_runs(repeats, plan(repeats.read_plan())):
        metrics = run.read_eval_metrics() or {}
        if metrics.get("split") != "test":
            raise ReslabError(f"variant {variant.name}: {run.path} was evaluated on the "
                              f"{metrics.get('split', 'no')} split, not a test split; give the "
                              "variant data.test_fraction > 0 (or a test/ folder)")
        found[member.key] = {k: metrics.get(k) for k in ("accuracy", "n", "top5", "macro_f1",
                                                          "nll", "ece")}
    target.write_test(variant.name, found)


def robustness_step(study_plan: StudyPlan, variant: Variant, target: StudyDir, log: Log) -> None:
    repeats = target.confirmation(variant.name)
    spec = study_plan.spec.robustness
    for _, run in finished_runs(repeats, plan(repeats.read_plan())):
        ensure_robustness(run, spec.suite, spec.raw, log)
    write_summary(repeats)
