"""env.json: what a run was recorded on, and the differences `compare` warns about."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from reslab.runs import env as env_mod
from reslab.runs.env import (
    collect_env,
    cpu_flags,
    cpu_isa,
    cpu_model,
    device_name,
    env_differences,
    git_state,
)

REQUIRED = {"torch", "device", "cpu_isa", "git", "reslab", "python", "torchvision", "timm",
            "optuna", "cuda", "cudnn", "cpu", "threads", "os", "command"}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def test_collect_env_records_every_field_as_json():
    env = collect_env(["reslab", "train", "my config.yaml"], threads=3, device="cpu")
    assert set(env) >= REQUIRED
    assert env["torch"] == torch.__version__
    assert env["threads"] == 3
    assert env["command"] == "reslab train 'my config.yaml'"
    assert env["device"] == env["cpu"] == cpu_model()
    assert json.loads(json.dumps(env)) == env


def test_collect_env_defaults_to_torch_threads_and_sys_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["reslab", "eval", "runs/x"])
    env = collect_env()
    assert env["threads"] == torch.get_num_threads()
    assert env["command"] == "reslab eval runs/x"
    if not torch.cuda.is_available():
        assert env["cuda"] is None and env["device"] == env["cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device_is_named_by_the_gpu():
    env = collect_env(device="cuda:0")
    assert env["device"] == torch.cuda.get_device_name(0)
    assert env["cuda"] == torch.version.cuda and env["cudnn"] is not None


def test_cpu_isa_reports_what_the_kernels_use(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    isa = cpu_isa()
    assert isa["capability"] == torch.backends.cpu.get_cpu_capability()
    assert isa["mkldnn_bf16"] == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert isa["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert set(isa["flags"]) <= set(env_mod.ISA_FLAGS)


def test_cpu_flags_from_x86_and_arm_cpuinfo():
    x86 = ("processor\t: 0\nmodel name\t: Some CPU\n"
           "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n")
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"
    assert cpu_flags(x86) == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert cpu_flags(arm) == ["asimd", "sve", "bf16", "i8mm"]
    assert cpu_flags("") == []


def test_device_name_for_cpu_and_mps():
    assert device_name("cpu", "Some CPU") == "Some CPU"
    assert device_name(torch.device("mps"), "Apple M2") == "Apple MPS (Apple M2)"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A git repo with a tracked package dir `src/pkg` (like reslab's checkout)."""
    repo = tmp_path / "repo"
    pkg = repo / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("runs/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return repo


@needs_git
def test_git_state_clean_then_dirty(checkout):
    pkg = checkout / "src" / "pkg"
    assert git_state(pkg) == {"commit": _git(checkout, "rev-parse", "HEAD"), "dirty": False}
    (checkout / "runs").mkdir()
    (checkout / "runs" / "out.json").write_text("{}")  # ignored run output
    (checkout / "notes.txt").write_text("outside the package")
    assert git_state(pkg)["dirty"] is False
    (pkg / "__init__.py").write_text("x = 2\n")
    assert git_state(pkg)["dirty"] is True


@needs_git
def test_git_state_untracked_new_module_is_dirty(checkout):
    (checkout / "src" / "pkg" / "new.py").write_text("")
    assert git_state(checkout / "src" / "pkg")["dirty"] is True


@needs_git
def test_git_state_none_outside_a_checkout_or_for_an_untracked_package(tmp_path, checkout):
    plain = tmp_path / "plain" / "pkg"
    plain.mkdir(parents=True)
    (plain / "__init__.py").write_text("")
    assert git_state(plain) is None
    # An install inside some other project's checkout (an ignored venv) is not reslab's git.
    site = checkout / "runs" / "venv" / "pkg"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    assert git_state(site) is None


def test_git_state_none_when_git_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    assert git_state(Path(env_mod.__file__).parent) is None


def test_git_state_none_when_git_hangs(monkeypatch, tmp_path):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(subprocess, "run", hang)
    assert git_state(tmp_path) is None


def _env(**changes) -> dict:
    base = {"device": "AMD EPYC", "cpu": "AMD EPYC", "threads": 8, "torch": "2.14.1",
            "cuda": None, "cudnn": None, "cpu_isa": {"capability": "AVX512", "flags": ["avx2"],
                                                     "mkldnn_bf16": True, "env": {}},
            "git": {"commit": "abc", "dirty": False}}
    return {**base, **changes}


def test_env_differences_one_line_per_differing_field():
    assert env_differences({"a": _env(), "b": _env()}) == []
    avx2 = {"capability": "AVX2", "flags": ["avx2"], "mkldnn_bf16": False,
            "env": {"ATEN_CPU_CAPABILITY": "avx2"}}
    lines = env_differences({"a": _env(), "b": _env(threads=16), "c": _env(cpu_isa=avx2),
                             "old": None})
    assert lines == ["cpu_isa.capability differs: AVX512 (a, b); AVX2 (c)",
                     "cpu_isa.mkldnn_bf16 differs: True (a, b); False (c)",
                     "cpu_isa.env differs: none (a, b); ATEN_CPU_CAPABILITY=avx2 (c)",
                     "threads differs: 8 (a, c); 16 (b)"]


def test_env_differences_device_versions_and_missing_fields():
    gpu = _env(device="NVIDIA H100", cuda="13.0", torch="2.14.0", git=None)
    lines = env_differences({"cpu": _env(), "gpu": gpu})
    assert "device differs: AMD EPYC (cpu); NVIDIA H100 (gpu)" in lines
    assert "torch differs: 2.14.1 (cpu); 2.14.0 (gpu)" in lines
    assert "cuda differs: none (cpu); 13.0 (gpu)" in lines
    assert "git.commit differs: abc (cpu); none (gpu)" in lines
    older = {k: v for k, v in _env().items() if k != "threads"}
    assert env_differences({"new": _env(), "old": older}) == [
        "threads differs: 8 (new); unknown (old)"]
