"""`python -m eagle_jax generate`: sample continuations from an LLM, offline.

  python -m eagle_jax generate --model smollm2 --prompt "Describe a heist movie in one sentence."
  python -m eagle_jax generate --model /path/model.gguf --prompt "..." --temperature 0.7
  python -m eagle_jax generate --model /path/hf_checkpoint_dir --prompt "..." --prompt "..."
"""

from __future__ import annotations

import argparse

from eagle_jax.errors import EagleError


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", default="smollm2",
                      help="smollm2, gemma3-270m, a local HF checkpoint dir or a .gguf file "
                           "(default: %(default)s)")
  parser.add_argument("--prompt", action="append", default=[],
                      help="a prompt; repeat the flag for a batch")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
  parser.add_argument("--top-k", type=int, default=0, help="0: off (default)")
  parser.add_argument("--top-p", type=float, default=1.0, help="1.0: off (default)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--no-chat-template", action="store_true",
                      help="feed the prompts as raw text (base models have no template anyway)")


def run(args: argparse.Namespace) -> int:
  if not args.prompt:
    raise EagleError("generate needs at least one --prompt")
  if args.temperature < 0:
    raise EagleError(f"--temperature must be >= 0, got {args.temperature}")
  from eagle_jax.llm import sampler as sampler_lib  # Heavy imports only when the command runs.
  from eagle_jax.llm.weights import load_model

  strategy = sampler_lib.make_strategy(args.temperature, args.top_k, args.top_p)
  model = load_model(args.model, dtype=args.dtype)
  sampler = sampler_lib.Sampler(model, batch_size=len(args.prompt))
  out = sampler.sample(args.prompt, max_new_tokens=args.max_new_tokens, strategy=strategy,
                       seed=args.seed, apply_template=not args.no_chat_template)
  for prompt, text, n, finished in zip(args.prompt, out.texts, out.num_generated, out.finished):
    print(f"### {prompt}")
    print(text.strip())
    print(f"[{n} tokens, {'finished' if finished else 'hit --max-new-tokens'}]\n")
  total = out.prefill_s + out.decode_s
  print(f"{model.name}: {out.tokens} tokens in {total:.1f} s (prefill {out.prefill_s:.1f} s, "
        f"decode {out.decode_s:.1f} s, compilation included)")
  return 0
