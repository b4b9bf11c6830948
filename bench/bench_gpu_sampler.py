"""Sampler throughput on an accelerator for the SmolLM2-135M architecture.

The packaged 98 MB GGUF cannot travel to a remote GPU machine with no network, so the
weights are random (decode speed does not depend on their values); the tokenizer, chat
template, model shape and the project's sharded sampler are the real ones.

  python bench/bench_gpu_sampler.py prepare .gpu       # here: dump tokenizer + shape
  python bench/bench_gpu_sampler.py run .gpu out.json  # on the GPU machine
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))


def prepare(folder: pathlib.Path) -> None:
  from eagle_jax.llm.weights import load_model
  m = load_model("smollm2")
  m.tokenizer.save_pretrained(folder / "tok")
  (folder / "meta.json").write_text(json.dumps({
      "config": dataclasses.asdict(m.config), "chat_template": m.chat_template,
      "bos_id": m.bos_id, "eos_ids": list(m.eos_ids), "add_bos": m.add_bos}))


def run(folder: pathlib.Path, out: pathlib.Path) -> None:
  import jax
  import jax.numpy as jnp
  from transformers import PreTrainedTokenizerFast

  from eagle_jax.llm import model as model_lib
  from eagle_jax.llm import sampler as sampler_lib
  from eagle_jax.llm.config import ModelConfig
  from eagle_jax.llm.weights import LoadedModel
  meta = json.loads((folder / "meta.json").read_text())
  cfg = ModelConfig(**meta["config"])
  tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tok")
  results = {"device": str(jax.devices()[0]), "jax": jax.__version__, "sampler": []}
  for dtype in ("bfloat16", "float32"):
    params = model_lib.init_params(cfg, jax.random.key(0), jnp.dtype(dtype))
    lm = LoadedModel("smollm2-random", cfg, params, tokenizer, meta["chat_template"],
                     meta["bos_id"], tuple(meta["eos_ids"]), meta["add_bos"])
    for batch in (16, 64, 256):
      sampler = sampler_lib.Sampler(lm, buckets=(128,), batch_size=batch)
      prompts = [f"Rewrite this movie description #{i}: a detective hunts an arsonist in a "
                 "heat wave." for i in range(batch)]
      greedy = sampler_lib.make_strategy(0.0)
      start = time.time()
      sampler.sample(prompts, max_new_tokens=128, strategy=greedy)
      first = time.time() - start
      start = time.time()
      o = sampler.sample(prompts, max_new_tokens=128, strategy=greedy, seed=1)
      row = dict(dtype=dtype, batch=batch, first_call_s=round(first, 2),
                 wall_s=round(time.time() - start, 3), tokens=o.tokens,
                 decode_tok_s=round(o.tokens / max(o.decode_s, 1e-9), 1),
                 prefill_s=round(o.prefill_s, 4))
      print(row, flush=True)
      results["sampler"].append(row)
  out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  if len(sys.argv) < 3 or sys.argv[1] not in ("prepare", "run"):
    raise SystemExit(__doc__)
  if sys.argv[1] == "prepare":
    prepare(pathlib.Path(sys.argv[2]))
  else:
    run(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))
