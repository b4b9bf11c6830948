"""Benchmark: the JAX sampler vs HF transformers PyTorch `generate` on SmolLM2-135M.

Same dequantised GGUF weights (fp32) on both sides, the same chat-templated prompt token
ids, the same batch, greedy, EOS ignored so every row produces `--new-tokens` tokens.
Each (backend, batch) runs in its own subprocess so its peak RSS (/proc VmHWM) is its
own; the torch side runs under `--torch-python` (a venv with torch; the project itself never
imports torch). llama.cpp is measured when `llama_cpp` imports there, else noted as skipped.

Reported per batch: prefill tok/s (real prompt tokens / prefill time), aggregate decode tok/s
(batch x (new_tokens - 1) / decode time: the first token comes out of the prefill), compile
time (JAX: jax.monitoring compile events; torch: none), peak RSS, and greedy agreement of the
two backends' tokens.

  python bench/bench_llm.py [--batches 1 8 16 32] [--new-tokens 128]
                            [--torch-python .venv-bench/bin/python]
Writes bench/results/llm.json and bench/results/llm.md (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MODEL = "smollm2"  # The packaged GGUF: both backends load the same file.
REPO = pathlib.Path(__file__).resolve().parent.parent

# Movie-writing requests of mixed lengths, like the environment's prompts.
PROMPTS = (
    "Describe a heist movie in one sentence.",
    "Write a short plot summary for a science-fiction film about a lonely lighthouse keeper "
    "on a distant moon.",
    "Rewrite this description as a comedy: a detective hunts an arsonist in a heat wave.",
    "Give a one-paragraph pitch for an animated film about a dog who wants to be a chef.",
    "Summarise the plot of a romantic drama set in Lisbon during a summer festival.",
    "Write a tagline and a two-sentence synopsis for a horror film set on a cruise ship.",
    "Describe a documentary about beekeepers in the Alps for a streaming catalogue.",
    "Rewrite this description for young children: two sisters inherit a failing vineyard.",
)


# ------------------------------------------------------------------------------ workers


def _peak_rss_mb() -> float:
  """This process's peak RSS. VmHWM, not getrusage's maxrss: Linux carries maxrss across
  exec, so a worker would report its parent's peak when that was higher."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Not Linux: kilobytes.


def jax_worker(req: dict) -> dict:
  """Loads SmolLM2 in Flax, runs the sampler twice (compile + steady) on the batch."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from eagle_jax.llm import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm.weights import load_model  # pylint: disable=g-import-not-at-top

  compile_s = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda name, secs, **_: compile_s.append(secs) if name.startswith("/jax/core/compile/")
      else None)
  lm = dataclasses.replace(load_model(req["model"]), eos_ids=())  # Ignore EOS.
  sampler = sampler_lib.Sampler(lm, buckets=(req["bucket"],), batch_size=req["batch"])
  prompts = req["prompts"]  # Already chat-templated.
  assert [sampler.encode(p) for p in prompts] == req["ids"]
  compile_s.clear()  # Only the sampler's programs.
  for _ in range(2):  # The first run compiles.
    out = sampler.sample(prompts, max_new_tokens=req["new_tokens"],
                         strategy=sampler_lib.Greedy(), apply_template=False)
  assert out.tokens == len(prompts) * req["new_tokens"], out.tokens
  return dict(prefill_s=out.prefill_s, decode_s=out.decode_s, prompt_tokens=out.prompt_tokens,
              compile_s=sum(compile_s), tokens=out.token_ids, peak_rss_mb=_peak_rss_mb())


def torch_worker(req: dict) -> dict:
  """Loads the same GGUF in HF transformers (fp32) and times `generate` on the same ids."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(req["gguf"])
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None  # Ignore EOS, like the JAX side.
  ids = req["ids"]
  width = max(map(len, ids))
  pad = req["pad_id"]
  input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
  mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])

  def generate(n):
    start = time.perf_counter()
    with torch.inference_mode():
      out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, pad_token_id=pad)
    return time.perf_counter() - start, out[:, width:]

  generate(4)  # Warm-up: first-call allocations.
  prefill_s, _ = generate(1)
  total_s, out = generate(req["new_tokens"])
  return dict(prefill_s=prefill_s, decode_s=total_s - prefill_s,
              prompt_tokens=sum(map(len, ids)), compile_s=0.0,
              tokens=out.tolist(), peak_rss_mb=_peak_rss_mb(), threads=torch.get_num_threads())


def llama_cpp_worker(req: dict) -> dict:
  """llama.cpp on the Q4 GGUF itself (single stream: batch 1 only)."""
  import llama_cpp  # pylint: disable=g-import-not-at-top

  llm = llama_cpp.Llama(model_path=req["gguf"], n_ctx=512, verbose=False)
  ids = req["ids"][0]
  llm.eval(ids[:4])  # Warm-up.
  llm.reset()
  start = time.perf_counter()
  llm.eval(ids)
  prefill_s = time.perf_counter() - start
  out = []
  start = time.perf_counter()
  for _ in range(req["new_tokens"] - 1):
    token = int(llm.sample(top_k=1))
    out.append(token)
    llm.eval([token])
  return dict(prefill_s=prefill_s, decode_s=time.perf_counter() - start,
              prompt_tokens=len(ids), compile_s=0.0, tokens=[out], peak_rss_mb=_peak_rss_mb())


WORKERS = {"jax": jax_worker, "torch": torch_worker, "llama_cpp": llama_cpp_worker}


def run_worker(python: str, kind: str, req: dict) -> dict:
  """Runs one worker in a fresh process; returns its result, or {"error": ...}."""
  with tempfile.TemporaryDirectory() as tmp:
    req_path, resp_path = pathlib.Path(tmp, "req.json"), pathlib.Path(tmp, "resp.json")
    req_path.write_text(json.dumps(req))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # One CPU device: the benchmark measures one host.
    proc = subprocess.run([python, __file__, "--worker", kind, "--request", str(req_path),
                           "--response", str(resp_path)], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
      tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
      return {"error": f"{kind} worker exited {proc.returncode}: {tail[0]}"}
    return json.loads(resp_path.read_text())


# ------------------------------------------------------------------------------- driver


def has_module(python: str, module: str) -> bool:
  return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def rates(result: dict, batch: int, new_tokens: int) -> dict:
  if "error" in result:
    return {"error": result["error"]}
  return dict(prefill_tok_s=result["prompt_tokens"] / result["prefill_s"],
              decode_tok_s=batch * (new_tokens - 1) / result["decode_s"],
              prefill_s=result["prefill_s"], decode_s=result["decode_s"],
              compile_s=result["compile_s"], peak_rss_mb=result["peak_rss_mb"])


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
  """Mean fraction of leading greedy tokens on which two backends agree."""
  fractions = []
  for x, y in zip(a, b):
    n = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
    fractions.append(n / max(len(x), 1))
  return sum(fractions) / len(fractions)


def _portable(path: str) -> str:
  """`path` relative to the working directory when it lies below it, else its file name."""
  p = pathlib.Path(path).absolute()
  try:
    return str(p.relative_to(pathlib.Path.cwd()))
  except ValueError:
    return p.name


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--bucket", type=int, default=64, help="JAX prompt bucket length")
  parser.add_argument("--torch-python", default=sys.executable,
                      help="python of a venv with torch + transformers (default: this one)")
  parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
  parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
  parser.add_argument("--request", type=pathlib.Path, help=argparse.SUPPRESS)
  parser.add_argument("--response", type=pathlib.Path, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    result = WORKERS[args.worker](json.loads(args.request.read_text()))
    args.response.write_text(json.dumps(result))
    return 0

  import tqdm  # pylint: disable=g-import-not-at-top

  from eagle_jax.run import artifacts
  from eagle_jax.llm import prompting, registry  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm.weights import load_model  # pylint: disable=g-import-not-at-top

  lm = load_model(MODEL)
  encoder = Sampler(lm, buckets=(args.bucket,))
  gguf = str(registry.resolve(MODEL).path)
  texts = [prompting.format_prompt(lm, PROMPTS[i % len(PROMPTS)]) for i in range(max(args.batches))]
  ids = [encoder.encode(t) for t in texts]
  baselines = {"torch": has_module(args.torch_python, "torch"),
               "llama_cpp": has_module(args.torch_python, "llama_cpp")}
  notes = [f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load "
           f"average {os.getloadavg()[0]:.1f} at start: other jobs may share the cores."]
  # Results are committed: name interpreters and files without this machine's paths.
  torch_python = _portable(args.torch_python)
  if not baselines["torch"]:
    notes.append(f"HF torch baseline skipped: no torch in {torch_python}")
  if not baselines["llama_cpp"]:
    notes.append(f"llama.cpp skipped: llama_cpp is not importable in {torch_python} "
                 "(llama-cpp-python compiles for ~10 min; install it there to include it)")

  rows = []
  jobs = [(b, kind) for b in args.batches for kind in ("jax", "torch", "llama_cpp")
          if kind == "jax" or (baselines[kind] and (kind != "llama_cpp" or b == 1))]
  results = {}
  for batch, kind in tqdm.tqdm(jobs, desc="bench", unit="run"):
    req = dict(model=MODEL, gguf=gguf, batch=batch, bucket=args.bucket,
               new_tokens=args.new_tokens, prompts=texts[:batch], ids=ids[:batch],
               pad_id=encoder.pad_id)
    python = sys.executable if kind == "jax" else args.torch_python
    results[batch, kind] = run_worker(python, kind, req)
    rows.append(dict(backend=kind, batch=batch, **rates(results[batch, kind], batch,
                                                        args.new_tokens)))
    if kind == "torch" and "error" not in results[batch, kind] and "error" not in results[
        batch, "jax"]:
      rows[-1]["greedy_agreement_with_jax"] = agreement(results[batch, "jax"]["tokens"],
                                                        results[batch, kind]["tokens"])
  speedups = {}
  for batch in args.batches:
    jax_row = next(r for r in rows if r["backend"] == "jax" and r["batch"] == batch)
    torch_row = next((r for r in rows if r["backend"] == "torch" and r["batch"] == batch), None)
    if torch_row and "error" not in torch_row and "error" not in jax_row:
      speedups[batch] = jax_row["decode_tok_s"] / torch_row["decode_tok_s"]
  report = dict(model=MODEL, gguf=pathlib.Path(gguf).name, new_tokens=args.new_tokens, bucket=args.bucket,
                prompt_lengths=[len(x) for x in ids], notes=notes, rows=rows,
                decode_speedup_jax_over_torch=speedups,
                when=time.strftime("%Y-%m-%d %H:%M:%S"))
  artifacts.write_json(args.out / "llm.json", report)
  artifacts.write_text(args.out / "llm.md", markdown(report))
  print(markdown(report))
  return 0


def markdown(report: dict) -> str:
  lines = [f"# LLM sampling benchmark: {report['model']}, greedy, {report['new_tokens']} new "
           f"tokens, EOS ignored", "",
           "| backend | batch | prefill tok/s | decode tok/s (aggregate) | compile s | "
           "peak RSS MB | greedy agreement |", "|---|---|---|---|---|---|---|"]
  for r in report["rows"]:
    if "error" in r:
      lines.append(f"| {r['backend']} | {r['batch']} | {r['error']} | | | | |")
      continue
    agree = r.get("greedy_agreement_with_jax")
    lines.append(f"| {r['backend']} | {r['batch']} | {r['prefill_tok_s']:.0f} | "
                 f"{r['decode_tok_s']:.1f} | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                 f"{'' if agree is None else f'{agree:.2f}'} |")
  lines += ["", "Decode speed-up, JAX over HF transformers: " + ", ".join(
      f"batch {b}: {s:.2f}x" for b, s in report["decode_speedup_jax_over_torch"].items()), ""]
  lines += [f"- {n}" for n in report["notes"]]
  lines.append(f"- prompt lengths (tokens): {report['prompt_lengths']}; JAX pads them to the "
               f"{report['bucket']}-token bucket, HF to the longest in the batch.")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  raise SystemExit(main())
