"""The locked environment: one lock of exact versions with hashes, generated from pyproject.toml; the conda
environment generated from it; and this interpreter holding exactly what the lock names (CI installs a
fresh clone from the lock, so there this is the fresh clone's install)."""
import tomllib
from conftest import REPO
from packaging.requirements import Requirement

from vitcompress.environment import conda_env, mismatches, normalize, python_version, read_lock

LOCK = REPO / "requirements.lock"


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_every_declared_dependency_is_locked_at_a_version_it_allows():
    pins = read_lock(LOCK)
    for req in _declared():
        assert normalize(req.name) in pins, f"{req.name} is in pyproject.toml but not in the lock: run make lock"
        assert req.specifier.contains(pins[normalize(req.name)], prereleases=True), \
            f"{req.name}: the lock's {pins[normalize(req.name)]} is outside {req.specifier}: run make lock"


def test_the_lock_pins_exact_versions_with_hashes_and_says_how_it_was_made():
    text = LOCK.read_text()
    assert "make lock" in text.splitlines()[0] and "uv pip compile pyproject.toml" in text.splitlines()[0]
    entries = [block for block in text.split("\n") if block and not block.startswith((" ", "#"))]
    assert entries and all("==" in e for e in entries)
    assert text.count("--hash=sha256:") >= len(entries)  # every pin has at least one hash
    assert python_version(LOCK) == "3.11"


def test_the_conda_environment_is_generated_from_the_lock():
    assert (REPO / "envs/vitcompress.yaml").read_text() == conda_env(LOCK), \
        "envs/vitcompress.yaml differs from the lock: run make lock"


def test_this_install_has_exactly_the_versions_the_lock_names():
    bad = mismatches(LOCK)
    assert not bad, "installed versions differ from requirements.lock (run make install):\n" + "\n".join(bad)


def test_a_mismatch_is_reported_by_name(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# --python-version 3.11\npytest==0.0.1 \\\n    --hash=sha256:00\nno-such-dist==1.0\n")
    assert read_lock(lock) == {"pytest": "0.0.1", "no-such-dist": "1.0"}
    bad = mismatches(lock)
    assert bad[0] == "no-such-dist: locked 1.0, installed nothing" and bad[1].startswith("pytest: locked 0.0.1")
