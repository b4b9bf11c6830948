"""Fixtures shared by every test file."""

from __future__ import annotations

import pathlib

import pytest

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return _REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir(repo_root) -> pathlib.Path:
  """`<repo root>/../shared` (data and references beside the checkout; not in CI's copy
  of every project), or a skip."""
  path = repo_root.parent / "shared"
  if not path.is_dir():
    pytest.skip(f"{path} is absent: this test reads data kept outside the repository")
  return path
