"""`python -m eagle_jax generate`: sample continuations from an LLM, offline.

Flags left out take the config's environment LLM settings (`llm.model`, `llm.dtype`,
`llm.temperature`, `llm.top_k`, `llm.top_p`, `llm.max_new_tokens`):

  python -m eagle_jax generate --prompt "Describe a heist movie in one sentence."
  python -m eagle_jax generate --config experiments/demo.py:qwen --prompt "..."
  python -m eagle_jax generate --model /path/model.gguf --prompt "..." --temperature 0.7
  python -m eagle_jax generate --model /path/hf_checkpoint_dir --prompt "..." --prompt "..."
"""

from __future__ import annotations

import argparse

from eagle_jax.errors import EagleError


def add_args(parser: argparse.ArgumentParser) -> None:
  from_config = "(default: the config's llm.%s)"
  parser.add_argument("--model", help="smollm2, gemma3-270m, a local HF checkpoint dir or a "
                      ".gguf file " + from_config % "model")
  parser.add_argument("--prompt", action="append", default=[],
                      help="a prompt; repeat the flag for a batch")
  parser.add_argument("--max-new-tokens", type=int, help=from_config % "max_new_tokens")
  parser.add_argument("--temperature", type=float, help="0: greedy " + from_config % "temperature")
  parser.add_argument("--top-k", type=int, help="0: off " + from_config % "top_k")
  parser.add_argument("--top-p", type=float, help="1.0: off " + from_config % "top_p")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"),
                      help=from_config % "dtype")
  parser.add_argument("--no-chat-template", action="store_true",
                      help="feed the prompts as raw text (base models have no template anyway)")


def _with_config_defaults(args: argparse.Namespace) -> None:
  """Fills the flags left out from the config's llm section (checked like any config)."""
  from eagle_jax.commands import common
  llm = common.config_from_args(args, announce=False).llm
  for flag in ("model", "max_new_tokens", "temperature", "top_k", "top_p", "dtype"):
    if getattr(args, flag) is None:
      setattr(args, flag, llm[flag])
  args.native_kernels = llm.get("native_kernels", True)  # No flag: --config.llm.native_kernels.


def run(args: argparse.Namespace) -> int:
  if not args.prompt:
    raise EagleError("generate needs at least one --prompt")
  _with_config_defaults(args)
  if args.temperature < 0:
    raise EagleError(f"--temperature must be >= 0, got {args.temperature}")
  from eagle_jax.llm import sampler as sampler_lib  # Heavy imports only when the command runs.
  from eagle_jax.llm.weights import load_model

  strategy = sampler_lib.make_strategy(args.temperature, args.top_k, args.top_p)
  model = load_model(args.model, dtype=args.dtype)
  sampler = sampler_lib.Sampler(model, batch_size=len(args.prompt),
                                native_kernels=args.native_kernels)
  out = sampler.sample(args.prompt, max_new_tokens=args.max_new_tokens, strategy=strategy,
                       seed=args.seed, apply_template=not args.no_chat_template)
  for prompt, text, n, finished in zip(args.prompt, out.texts, out.num_generated, out.finished):
    print(f"### {prompt}")
    print(text.strip())
    print(f"[{n} tokens, {'finished' if finished else 'hit --max-new-tokens'}]\n")
  total = out.prefill_s + out.decode_s
  print(f"{model.name}: {out.tokens} tokens in {total:.1f} s (prefill {out.prefill_s:.1f} s, "
        f"decode {out.decode_s:.1f} s, compilation included; decode kernels: "
        f"{sampler.decode_kernels})")
  return 0
