"""Benchmark: the JAX sampler vs HF transformers PyTorch `generate` (and llama.cpp) on
SmolLM2-135M, interleaved in one run and repeated.

The same GGUF weights everywhere, the same chat-templated prompt token ids, the same batch,
greedy. HF multiplies their float32 dequantisation; so does the JAX variant `jax-xla`
(`native_kernels=False`: XLA's kernels). The JAX sampler as it ships (`jax`) runs decode steps
of at most `native_kernels.MAX_ROWS` rows in its native kernels: products of the GGUF's own
Q4_1 / Q8_0 blocks (the same weight values, float32 activations) and attention over the KV
cache. llama.cpp runs the
Q4 GGUF itself (its activations quantised to 8 bits). Two measures per batch size:
  * decode: EOS ignored, so every row produces `--new-tokens` tokens; aggregate decode tok/s
    = batch x (new_tokens - 1) / decode time (the first token comes out of the prefill);
  * workload: `--workload` distinct prompts answered with EOS honoured, up to `--new-tokens`:
    generated tokens / wall time. HF `generate` runs them `batch` at a time (a batch waits
    for its longest answer); the JAX sampler refills a slot as soon as its answer ends.
Each repeat starts one fresh process per backend (its peak RSS, /proc VmHWM, is its own),
backends alternating; the report gives medians with [min-max] over repeats and the load
average before and after each process. The torch side runs under `--torch-python` (a venv
with torch; the project itself never imports torch); llama.cpp (single stream, its Q4 GGUF)
when `llama_cpp` imports there. A roofline line sets the JAX decode step against the bytes
it must read (the weights as it multiplies them + KV cache) at this machine's measured memory
bandwidth.

  python bench/bench_llm.py [--batches 1 8 16 32] [--new-tokens 64] [--repeats 3]
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
import statistics
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
# The workload: distinct requests whose answers end at different lengths.
GENRES = ("heist", "horror", "romantic", "science-fiction", "animated", "war", "western",
          "musical")
SUBJECTS = ("a lighthouse keeper", "two rival chefs", "a retired spy", "a lost dog",
            "a chess prodigy", "a haunted hotel", "a failing vineyard", "a stolen painting")
LENGTHS = ("in one sentence", "in two sentences", "as a one-line tagline", "in a short paragraph")


def workload_prompts(n: int) -> list[str]:
  return [f"Describe a {GENRES[i % 8]} movie about {SUBJECTS[i // 8 % 8]} "
          f"{LENGTHS[i // 64 % 4]}." for i in range(n)]


# ------------------------------------------------------------------------------ workers


def _peak_rss_mb() -> float:
  """This process's peak RSS. VmHWM, not getrusage's maxrss: Linux carries maxrss across
  exec, so a worker would report its parent's peak when that was higher."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Not Linux: kilobytes.


def jax_worker(req: dict) -> dict:
  """SmolLM2 in Flax: per batch, the decode and the workload, each run after a warm-up."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from eagle_jax.llm import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm.weights import load_model  # pylint: disable=g-import-not-at-top

  compile_s = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda name, secs, **_: compile_s.append(secs) if name.startswith("/jax/core/compile/")
      else None)
  lm = load_model(req["model"])
  free = dataclasses.replace(lm, eos_ids=())  # Ignores EOS: fixed-length decode.
  greedy = sampler_lib.Greedy()
  native = req["native_kernels"]
  results = {}
  for batch in req["batches"]:
    sampler = sampler_lib.Sampler(free, buckets=(req["bucket"],), batch_size=batch,
                                  native_kernels=native)
    if native and sampler.native_reason:
      raise RuntimeError(f"the native kernels were asked for: {sampler.native_reason}")
    prompts = req["prompts"][:batch]  # Already chat-templated.
    assert [sampler.encode(p) for p in prompts] == req["ids"][:batch]
    compile_s.clear()
    for _ in range(2):  # The first run compiles.
      out = sampler.sample(prompts, max_new_tokens=req["new_tokens"], strategy=greedy,
                           apply_template=False)
    assert out.tokens == batch * req["new_tokens"], out.tokens
    row = dict(prefill_s=out.prefill_s, decode_s=out.decode_s, compile_s=sum(compile_s),
               prompt_tokens=out.prompt_tokens, tokens=out.token_ids)
    if batch > 1:
      sampler = sampler_lib.Sampler(lm, buckets=(req["bucket"],), batch_size=batch,
                                    native_kernels=native)
      work = req["workload"]
      sampler.sample(work[:batch + 1], max_new_tokens=req["new_tokens"], strategy=greedy,
                     apply_template=False)  # Compiles the first fill and a refill.
      start = time.perf_counter()
      out = sampler.sample(work, max_new_tokens=req["new_tokens"], strategy=greedy,
                           apply_template=False)
      row.update(workload_s=time.perf_counter() - start, workload_tokens=out.tokens)
    results[batch] = row
  return dict(batches=results, peak_rss_mb=_peak_rss_mb())


def torch_worker(req: dict) -> dict:
  """The same GGUF in HF transformers (fp32): `generate` on the same ids, same measures."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(req["gguf"])
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  eos = model.generation_config.eos_token_id
  pad = req["pad_id"]

  def generate(ids, n, *, stop=False):
    width = max(map(len, ids))
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    model.generation_config.eos_token_id = eos if stop else None
    start = time.perf_counter()
    with torch.inference_mode():
      out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n,
                           min_new_tokens=1 if stop else n, do_sample=False, pad_token_id=pad)
    return time.perf_counter() - start, out[:, width:].tolist()

  eos_ids = set(eos if isinstance(eos, list) else [eos])
  results = {}
  for batch in req["batches"]:
    ids = req["ids"][:batch]
    generate(ids, 4)  # Warm-up: first-call allocations.
    prefill_s, _ = generate(ids, 1)
    total_s, out = generate(ids, req["new_tokens"])
    row = dict(prefill_s=prefill_s, decode_s=total_s - prefill_s, compile_s=0.0,
               prompt_tokens=sum(map(len, ids)), tokens=out)
    if batch > 1:
      work, tokens, start = req["workload_ids"], 0, time.perf_counter()
      for i in range(0, len(work), batch):
        _, answers = generate(work[i:i + batch], req["new_tokens"], stop=True)
        for answer in answers:  # Up to and including the EOS, as the JAX side counts.
          ends = [k for k, t in enumerate(answer) if t in eos_ids]
          tokens += ends[0] + 1 if ends else len(answer)
      row.update(workload_s=time.perf_counter() - start, workload_tokens=tokens)
    results[batch] = row
  return dict(batches=results, peak_rss_mb=_peak_rss_mb(), threads=torch.get_num_threads())


def llama_cpp_worker(req: dict) -> dict:
  """llama.cpp on the Q4 GGUF itself (single stream: batch 1 only)."""
  import llama_cpp  # pylint: disable=g-import-not-at-top

  llm = llama_cpp.Llama(model_path=req["gguf"], n_ctx=512, n_threads=os.cpu_count(),
                        verbose=False)
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
  return dict(batches={1: dict(prefill_s=prefill_s, decode_s=time.perf_counter() - start,
                               prompt_tokens=len(ids), compile_s=0.0, tokens=[out])},
              peak_rss_mb=_peak_rss_mb())


WORKERS = {"jax": jax_worker, "jax-xla": jax_worker, "torch": torch_worker,
           "llama_cpp": llama_cpp_worker}


def run_worker(python: str, kind: str, req: dict) -> dict:
  """Runs one worker in a fresh process; returns its result (+ load average before/after),
  or {"error": ...}."""
  with tempfile.TemporaryDirectory() as tmp:
    req_path, resp_path = pathlib.Path(tmp, "req.json"), pathlib.Path(tmp, "resp.json")
    req_path.write_text(json.dumps(req))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # One CPU device: the benchmark measures one host.
    load = os.getloadavg()[0]
    proc = subprocess.run([python, __file__, "--worker", kind, "--request", str(req_path),
                           "--response", str(resp_path)], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
      tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
      return {"error": f"{kind} worker exited {proc.returncode}: {tail[0]}"}
    result = json.loads(resp_path.read_text())
    result["batches"] = {int(b): r for b, r in result["batches"].items()}
    result["load"] = (load, os.getloadavg()[0])
    return result


# ------------------------------------------------------------------------------- driver


def has_module(python: str, module: str) -> bool:
  return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


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


def memory_bandwidth_gb_s(repeats: int = 5) -> float:
  """Read bandwidth of this machine, best of `repeats`: a 512 MiB matrix times a vector (a
  multi-threaded BLAS gemv, the memory-bound operation a decode step is made of)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  matrix = np.ones((32768, 4096), np.float32)
  vector = np.ones(4096, np.float32)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matrix @ vector
    times.append(time.perf_counter() - start)
  return matrix.nbytes / min(times) / 1e9


def spread(values: list[float]) -> dict:
  return dict(median=statistics.median(values), min=min(values), max=max(values))


def summarise(runs: list[dict], batch: int, new_tokens: int) -> dict:
  """Medians and spread over repeats of one backend's rates at one batch size."""
  rows = [r["batches"][batch] for r in runs if "error" not in r and batch in r["batches"]]
  if not rows:
    return {}
  out = dict(prefill_tok_s=spread([r["prompt_tokens"] / r["prefill_s"] for r in rows]),
             decode_tok_s=spread([batch * (new_tokens - 1) / r["decode_s"] for r in rows]),
             compile_s=spread([r["compile_s"] for r in rows]),
             peak_rss_mb=max(r["peak_rss_mb"] for r in runs if "error" not in r))
  if all("workload_s" in r for r in rows):
    out["workload_tok_s"] = spread([r["workload_tokens"] / r["workload_s"] for r in rows])
    out["workload_tokens"] = rows[0]["workload_tokens"]
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--workload", type=int, default=64,
                      help="distinct prompts of the EOS-honouring workload (batches > 1)")
  parser.add_argument("--repeats", type=int, default=3)
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

  import jax  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top

  from eagle_jax.llm import native_kernels, registry  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm import prompting  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  from eagle_jax.llm.weights import load_model  # pylint: disable=g-import-not-at-top
  from eagle_jax.run import artifacts  # pylint: disable=g-import-not-at-top

  lm = load_model(MODEL)
  encoder = Sampler(lm, buckets=(args.bucket,))
  gguf = str(registry.resolve(MODEL).path)
  texts = [prompting.format_prompt(lm, PROMPTS[i % len(PROMPTS)])
           for i in range(max(args.batches))]
  work = [prompting.format_prompt(lm, p) for p in workload_prompts(args.workload)]
  req = dict(model=MODEL, gguf=gguf, batches=args.batches, bucket=args.bucket,
             new_tokens=args.new_tokens, prompts=texts, ids=[encoder.encode(t) for t in texts],
             workload=work, workload_ids=[encoder.encode(t) for t in work],
             pad_id=encoder.pad_id)
  baselines = {"torch": has_module(args.torch_python, "torch"),
               "llama_cpp": has_module(args.torch_python, "llama_cpp")}
  notes = [f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})."]
  # Results are committed: name interpreters and files without this machine's paths.
  torch_python = _portable(args.torch_python)
  if not baselines["torch"]:
    notes.append(f"HF torch baseline skipped: no torch in {torch_python}")
  if not baselines["llama_cpp"]:
    notes.append(f"llama.cpp skipped: llama_cpp is not importable in {torch_python} "
                 "(llama-cpp-python compiles for ~10 min; install it there to include it)")
  bandwidth = memory_bandwidth_gb_s()

  kinds = ["jax", "jax-xla"] + [k for k in ("torch", "llama_cpp") if baselines[k]]
  # Where the native kernels are not used (batches past MAX_ROWS) the two JAX variants are one
  # program; llama.cpp is measured single-stream.
  batches_of = {"jax-xla": [b for b in args.batches if b <= native_kernels.MAX_ROWS],
                "llama_cpp": [1]}
  runs: dict[str, list[dict]] = {k: [] for k in kinds}
  for _ in tqdm.trange(args.repeats, desc="bench repeats"):
    for kind in kinds:  # Interleaved: a slow spell of the machine hits every backend.
      python = sys.executable if kind.startswith("jax") else args.torch_python
      runs[kind].append(run_worker(python, kind, dict(
          req, batches=batches_of.get(kind, args.batches), native_kernels=kind == "jax")))
  rows = []
  for batch in args.batches:
    for kind in kinds:
      summary = summarise(runs[kind], batch, args.new_tokens)
      if summary:
        rows.append(dict(backend=kind, batch=batch, **summary))
    jax_runs = [r for r in runs["jax"] if "error" not in r]
    for kind in kinds[1:]:
      other = [r for r in runs[kind] if "error" not in r and batch in r["batches"]]
      if jax_runs and other:
        row = next(r for r in rows if r["backend"] == kind and r["batch"] == batch)
        row["greedy_agreement_with_jax"] = agreement(jax_runs[0]["batches"][batch]["tokens"],
                                                     other[0]["batches"][batch]["tokens"])
  errors = [f"{kind}: {r['error']}" for kind in kinds for r in runs[kind] if "error" in r]

  def ratio(batch, kind, key):
    ours = next((r for r in rows if r["backend"] == "jax" and r["batch"] == batch), {})
    theirs = next((r for r in rows if r["backend"] == kind and r["batch"] == batch), {})
    if key in ours and key in theirs:
      return ours[key]["median"] / theirs[key]["median"]
    return None

  speedups = {kind: {key: {b: ratio(b, kind, key) for b in args.batches
                           if ratio(b, kind, key) is not None}
                     for key in ("decode_tok_s", "workload_tok_s")} for kind in kinds[1:]}
  # Roofline: a decode step reads every weight (as it multiplies them: blocks where the native
  # kernel runs, else float32) and the whole static KV cache once.
  c = lm.config
  float_bytes = sum(x.nbytes for x in jax.tree.leaves(lm.params))
  block_bytes = sum(x.nbytes for x in jax.tree.leaves(lm.blocks))
  # Float32 matrices the blocks replace (the tied embedding's table is only gathered from).
  replaced = sum(x.size // x.shape[-1] * native_kernels.BLOCK * 4
                 for x in jax.tree.leaves(lm.blocks))
  cache_length = args.bucket + -(-args.new_tokens // 32) * 32
  roofline = {}
  for batch in args.batches:
    kv_bytes = c.num_layers * 2 * batch * cache_length * c.num_kv_heads * c.head_dim * 4
    param_bytes = float_bytes - replaced + block_bytes if batch <= native_kernels.MAX_ROWS \
        else float_bytes
    ours = next((r for r in rows if r["backend"] == "jax" and r["batch"] == batch), None)
    if ours:
      floor_s = (param_bytes + kv_bytes) / (bandwidth * 1e9)
      step_s = batch / ours["decode_tok_s"]["median"]
      roofline[batch] = dict(bytes_per_step=param_bytes + kv_bytes, floor_ms=floor_s * 1e3,
                             step_ms=step_s * 1e3, fraction=floor_s / step_s,
                             bound_tok_s=batch / floor_s)
  report = dict(model=MODEL, gguf=pathlib.Path(gguf).name, new_tokens=args.new_tokens,
                bucket=args.bucket, repeats=args.repeats, workload_prompts=args.workload,
                prompt_lengths=[len(x) for x in req["ids"]],
                workload_prompt_lengths=[len(x) for x in req["workload_ids"]],
                memory_bandwidth_gb_s=bandwidth, roofline=roofline, notes=notes + errors,
                rows=rows, speedup_jax_over=speedups,
                load={kind: [r.get("load") for r in runs[kind]] for kind in kinds},
                when=time.strftime("%Y-%m-%d %H:%M:%S"))
  artifacts.write_json(args.out / "llm.json", report)
  artifacts.write_text(args.out / "llm.md", markdown(report))
  print(markdown(report))
  return 0


def _fmt(s: dict | None, digits: int = 1) -> str:
  if not s:
    return ""
  return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def markdown(report: dict) -> str:
  lines = [f"# LLM sampling benchmark: {report['model']}, greedy, {report['new_tokens']} new "
           f"tokens, median [min-max] of {report['repeats']} interleaved repeats", "",
           "| backend | batch | prefill tok/s | decode tok/s (EOS ignored) | workload tok/s "
           "(EOS) | compile s | peak RSS MB | greedy agreement |",
           "|---|---|---|---|---|---|---|---|"]
  for r in report["rows"]:
    agree = r.get("greedy_agreement_with_jax")
    lines.append(f"| {r['backend']} | {r['batch']} | {_fmt(r['prefill_tok_s'], 0)} | "
                 f"{_fmt(r['decode_tok_s'])} | {_fmt(r.get('workload_tok_s'))} | "
                 f"{r['compile_s']['median']:.1f} | {r['peak_rss_mb']:.0f} | "
                 f"{'' if agree is None else f'{agree:.2f}'} |")
  lines.append("")
  for kind, by_key in report["speedup_jax_over"].items():
    for key, label in (("decode_tok_s", "decode"), ("workload_tok_s", "workload")):
      if by_key[key]:
        lines.append(f"- JAX over {kind}, {label}: " + ", ".join(
            f"batch {b}: {s:.2f}x" for b, s in by_key[key].items()))
  lines.append(f"- Roofline: memory read bandwidth {report['memory_bandwidth_gb_s']:.1f} GB/s; "
               "a JAX decode step must read the weights (as it multiplies them) and the KV "
               "cache once: " + "; ".join(
                   f"batch {b}: {r['bytes_per_step'] / 1e6:.0f} MB, floor {r['floor_ms']:.0f} "
                   f"ms vs {r['step_ms']:.0f} ms measured ({r['fraction']:.0%}; at most "
                   f"{r['bound_tok_s']:.0f} tok/s)" for b, r in report["roofline"].items()))
  lines += [f"- {n}" for n in report["notes"]]
  lines.append("- load average before/after each process: " + "; ".join(
      f"{kind} " + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in (x for x in loads if x))
      for kind, loads in report["load"].items()))
  lines.append(f"- prompt lengths (tokens): {report['prompt_lengths']}; JAX pads them to the "
               f"{report['bucket']}-token bucket, HF to the longest in the batch. Workload: "
               f"{report['workload_prompts']} prompts of "
               f"{min(report['workload_prompt_lengths'])}-"
               f"{max(report['workload_prompt_lengths'])} tokens.")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  raise SystemExit(main())
