"""Run-folder artefacts: strict JSON and writes that never leave a half-written file."""

import json

import numpy as np
import pytest

from eagle_jax.run import artifacts


def test_json_is_strict_with_undefined_statistics_as_null(tmp_path):
  path = tmp_path / "design.json"
  artifacts.write_json(path, {"correlation": float("nan"), "gain": np.float32(0.5),
                              "per_anchor": np.array([1.0, np.inf]), "n": np.int64(3)})
  text = path.read_text()
  assert "NaN" not in text and "Infinity" not in text
  # A strict parser (as in browsers or jq) reads it.
  got = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
  assert got == {"correlation": None, "gain": 0.5, "per_anchor": [1.0, None], "n": 3}


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "a.json"
  artifacts.write_json(path, {"v": 1})
  with pytest.raises(TypeError):
    artifacts.write_json(path, {"v": object()})
  assert artifacts.read_json(path) == {"v": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
