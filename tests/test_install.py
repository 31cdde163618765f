"""An installed (not editable) vitcompress works on its own: its templates, schema and reference tables
ship as package data, so a table renders from anywhere."""
import os
import shutil
import subprocess
import sys

from conftest import REPO
from test_report import _cell


def test_a_non_editable_install_renders_the_tables(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / item, src / item)
    shutil.copytree(REPO / "vitcompress", src / "vitcompress", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(src)],
                   check=True, capture_output=True, timeout=600)
    shutil.rmtree(src)  # nothing of the source tree is left to read from
    files = [_cell(tmp_path, "digits", "vanilla", profile="demo", chain=["vit"], accuracy=97.0),
             _cell(tmp_path, "digits", "lsq", profile="demo", chain=["vit", "lsq"], accuracy=96.0)]
    script = ("import sys, vitcompress\n"
              "assert vitcompress.__file__.startswith(sys.argv[1]), vitcompress.__file__\n"
              "from vitcompress.report.tables import render_tables\n"
              "render_tables(sys.argv[2:], 'demo', ['digits'], ['vanilla', 'lsq'], md='t.md', tex='t.tex')\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", script, str(site), *files], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=300)
    md = (tmp_path / "t.md").read_text()
    assert "| M lsq |" in md and "96.00" in md and (tmp_path / "t.tex").read_text().startswith("% vitcompress")
