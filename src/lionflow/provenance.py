"""Where a run's numbers come from: the config's hash, the project's git commit (and whether its tree
was dirty) and the versions of the packages that made them. summary.json records it; the report and
the export's cards show it."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# The packages whose versions change what a run computes or how it is read.
PACKAGES = ("lionflow", "torch", "transformers", "tokenizers", "accelerate", "peft", "datasets", "lm-eval",
            "openai", "polars", "snakemake")


def canonical_json(config: dict) -> str:
    """The config as canonical JSON: sorted keys, no spaces, UTF-8 text (the same config, the same text)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_sha256(config: dict) -> str:
    """sha256 of the canonical JSON of the validated config (defaults filled in)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("git %s in %s failed: %s", " ".join(args), root, e)
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root) -> dict:
    """{commit, dirty} of the git checkout holding `root`; both null when git is absent or `root` is not
    in a git work tree. dirty: a tracked file differs from the commit (untracked files do not count:
    results/, logs/ and caches are ignored, and the config is covered by its hash)."""
    root = Path(root)
    if shutil.which("git") is None:
        return {"commit": None, "dirty": None}
    inside = _git(root, "rev-parse", "--is-inside-work-tree")
    commit = _git(root, "rev-parse", "HEAD") if inside and inside.strip() == "true" else None
    if commit is None:  # not a repository, or one without a commit yet
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions(names=PACKAGES) -> dict:
    """Installed version of each package (null when it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict, root) -> dict:
    """summary.json's `provenance`: the config and its hash, git commit and dirty flag of `root`, package
    versions."""
    git = git_state(root)
    return {"config_sha256": config_sha256(config), "config": config, "git_commit": git["commit"],
            "git_dirty": git["dirty"], "packages": package_versions()}


def describe(prov: dict) -> str:
    """One line for people: config hash, commit, and whether the tree was dirty."""
    if prov["git_commit"] is None:
        commit = "git commit unknown (not a git checkout, or no git)"
    else:
        commit = f"git commit {prov['git_commit']}" + (" from a DIRTY tree (uncommitted changes)"
                                                       if prov["git_dirty"] else "")
    return f"config sha256 {prov['config_sha256']}, {commit}"
