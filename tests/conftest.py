import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "dvc.yaml", ".dvcignore", "rules", "scripts", "envs", "profiles", "params.yaml"]


# CI reaches package registries only: never let a test wait on a model hub. Set before anything imports
# huggingface_hub, which reads it once at import (set per test, it came too late for every test after the
# first import of timm's hub code: a pretrained-download test then waited 46 s on the network).
os.environ["HF_HUB_OFFLINE"] = "1"


TINY_VIT = {"timm": "vit_small_patch16_224",
            "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_pool": "avg",
                       "class_token": False}}


@pytest.fixture(scope="session")
def digits_file(tmp_path_factory):
    """The digits data set, prepared once per test session."""
    from vitcompress.data import prepare

    path = tmp_path_factory.mktemp("data") / "digits.pt"
    prepare({"source": "digits"}, path)
    return path


@pytest.fixture(scope="session")
def random_vit(digits_file):
    """An untrained (seeded) tiny ViT for digits, as the parent artifact of a compression step."""
    import torch

    from vitcompress.artifacts import Artifact
    from vitcompress.data import PreparedData
    from vitcompress.models import arch_for, create

    torch.set_num_threads(1)
    arch = arch_for(TINY_VIT, PreparedData(digits_file).meta)
    torch.manual_seed(0)
    return Artifact(arch, create(arch).state_dict(), [], {"steps": []})


@pytest.fixture
def raw_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_profile(raw: dict, datasets=("digits",), rows=None) -> dict:
    """params.yaml running its checked-in ``tiny`` profile (``extends: demo``), on ``datasets``; ``rows``:
    only these row ids, and no attention scaling benchmark."""
    raw = copy.deepcopy(raw)
    prof = raw["profiles"]["tiny"]
    prof["datasets"] = list(datasets)
    if rows is not None:
        prof["rows"] = [r for r in prof["rows"] if r["id"] in rows]
        prof["scaling"] = None
    raw["profile"] = "tiny"
    return raw


def make_workflow(dest: Path, raw: dict) -> Path:
    """A copy of the workflow (not the library, which is installed) with the given params.yaml."""
    for item in WORKFLOW_FILES:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item)
        else:
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / item)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


# DVC's usage analytics stay off in every process the tests start (a copied workflow's `dvc init` would turn
# them on; the project's own .dvc/config turns them off): no usage data leaves a machine from the test suite.
os.environ["DVC_NO_ANALYTICS"] = "1"


def tool_env() -> dict:
    """The environment for the workflow's tools (snakemake, dvc): this interpreter's bin first, DVC's
    analytics off."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args, check=True, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir,
                          capture_output=True, text=True, env=tool_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def step_ctx(step: dict, parent, data_file):
    """The context a step's ``run`` gets in the workflow, on the digits data set and the CPU."""
    from vitcompress.methods import StepContext

    return StepContext(step=step, dataset="digits", data_file=Path(data_file), device="cpu", parent=parent)


def saved(art, path: Path):
    """``art`` saved to ``path`` and loaded back, as the next step of a chain gets it."""
    from vitcompress.runtimes import load_artifact

    art.save(path)
    return load_artifact(path)
