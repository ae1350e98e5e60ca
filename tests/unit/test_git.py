"""Tests of the checkout's commit lookup."""

import subprocess

from mlkit._git import git_head
from mlkit.deploy.gate import git_head as deploy_git_head


def test_git_head(tmp_path):
    assert git_head(tmp_path) is None  # not a checkout
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    head = git_head(tmp_path)
    assert head is not None and len(head) == 40


def test_git_head_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_head(tmp_path) is None


def test_deployment_uses_the_same_helper():
    assert deploy_git_head is git_head
