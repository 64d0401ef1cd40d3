"""What the docs and the repository layout promise: generated option docs in date, user-facing configs that load
and point at no benchmark data, and a package that never imports the experiments."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmemo.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_configuration_docs_are_generated_from_the_current_dataclasses():
    done = subprocess.run([sys.executable, "scripts/gen_config_docs.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")))
def test_user_facing_configs_load_and_read_no_benchmark_data(path):
    text = (REPO / path).read_text()
    assert "shared" not in text  # benchmark configs that read ../shared live beside their benchmark
    load_config(REPO / path)  # every key and type checked


def test_nothing_in_the_package_or_its_tests_imports_the_experiments():
    pattern = re.compile(r"^\s*(from|import)\s+experiments\b", re.MULTILINE)
    offenders = [p for folder in ("mmemo", "tests") for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders
