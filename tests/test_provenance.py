"""Provenance: the config's hash, the git commit and dirty flag (null outside git), package versions."""
import hashlib
import json
import subprocess

import pytest

from lionflow.artifacts import validate
from lionflow.provenance import config_sha256, describe, git_state, package_versions, provenance


def test_config_hash_is_the_sha256_of_canonical_json():
    a = {"run": "x", "llm": {"b": 1, "a": [1, 2]}, "seed": 0}
    b = {"seed": 0, "llm": {"a": [1, 2], "b": 1}, "run": "x"}  # the same config, other key order
    assert config_sha256(a) == config_sha256(b)
    canonical = '{"llm":{"a":[1,2],"b":1},"run":"x","seed":0}'
    assert config_sha256(a) == hashlib.sha256(canonical.encode()).hexdigest()
    assert config_sha256({**a, "seed": 1}) != config_sha256(a)


def test_outside_a_git_checkout_commit_and_dirty_are_null(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_without_git_on_path_commit_and_dirty_are_null(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_commit_and_dirty_tree(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # no commit yet
    (tmp_path / "Snakefile").write_text("rule all:\n")
    git("add", "Snakefile")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text("{}")  # untracked output does not make it dirty
    assert git_state(tmp_path / "results") == {"commit": head, "dirty": False}
    (tmp_path / "Snakefile").write_text("rule all:\n    input: []\n")
    state = git_state(tmp_path)
    assert state == {"commit": head, "dirty": True}
    prov = provenance({"run": "x"}, tmp_path)
    assert prov["git_commit"] == head and prov["git_dirty"] is True
    assert "DIRTY" in describe(prov) and head in describe(prov)


def test_provenance_fits_the_summary_schema(tmp_path):
    prov = provenance({"run": "x", "llm": {}}, tmp_path)
    assert prov["config"] == {"run": "x", "llm": {}} and prov["config_sha256"] == config_sha256(prov["config"])
    versions = package_versions()
    assert versions["torch"] and versions["transformers"] and versions["lionflow"]
    assert package_versions(["no-such-package-lionflow"]) == {"no-such-package-lionflow": None}
    summary = {"run": "x", "iterations": [], "base_eval": {}, "final_eval": {}, "provenance": prov}
    validate(summary, "summary", "test")
    assert "unknown" in describe(prov)
    with pytest.raises(Exception, match="provenance"):
        validate({k: v for k, v in summary.items() if k != "provenance"}, "summary", "test")
    json.dumps(prov)
