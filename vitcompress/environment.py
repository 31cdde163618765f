"""The locked environment: ``requirements.lock`` (exact versions with hashes, generated from
``pyproject.toml`` by ``uv pip compile``: ``make lock``), the conda environment generated from it, and
whether this interpreter has what it names.

``make demo``, ``make test`` and CI install with ``pip install --require-hashes --no-deps -r
requirements.lock`` and then the project itself with ``--no-deps``: every install, on every machine,
gets the same libraries, and a file whose hash differs from the lock's is refused by pip.
"""
from __future__ import annotations

import re
from pathlib import Path

LOCK = "requirements.lock"
CONDA_ENV = "envs/vitcompress.yaml"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """A distribution name as the registry compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path = LOCK) -> dict[str, str]:
    """{normalized name: exact version} of every requirement the lock file pins."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def python_version(path: str | Path = LOCK) -> str:
    """The Python version the lock was resolved for (its ``--python-version``)."""
    m = re.search(r"--python-version[ =](\d+\.\d+)", Path(path).read_text())
    if not m:
        raise ValueError(f"{path}: no --python-version in its header; regenerate it with `make lock`")
    return m.group(1)


def conda_env(lock: str | Path = LOCK) -> str:
    """The conda environment file for the ``script:`` rules under ``snakemake --sdm conda``: the lock's
    Python, and the lock's exact versions through pip (conda runs pip from ``envs/``), then the project."""
    pins = read_lock(lock)
    lines = ["# Generated from requirements.lock by `make lock` (vitcompress.environment.conda_env): do not edit.",
             "# The `script:` rules' environment under `snakemake --sdm conda`; the `run:` jobs run in Snakemake's own.",
             "name: vitcompress", "channels:", "  - conda-forge", "dependencies:",
             f"  - python={python_version(lock)}", "  - pip", "  - pip:"]
    lines += [f'      - "{name}=={version}"' for name, version in sorted(pins.items())]
    lines += ['      - "-e .."  # the project itself (conda runs pip from this folder)']
    return "\n".join(lines) + "\n"


def mismatches(lock: str | Path = LOCK) -> list[str]:
    """Every pin of the lock this interpreter does not have at that version ("name: locked X, installed Y")."""
    from vitcompress.io import package_version

    out = []
    for name, version in sorted(read_lock(lock).items()):
        have = package_version(name)
        if have is None or _base(have) != _base(version):
            out.append(f"{name}: locked {version}, installed {have or 'nothing'}")
    return out


def _base(version: str) -> str:
    """A version without its local part (torch's ``+cu130``), as pip compares pins."""
    return version.split("+", 1)[0]
