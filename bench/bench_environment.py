"""Benchmark: the environment LLM's work in the demo's design stage and in one RL iteration,
this checkout against a baseline revision (default: the commit before the sampler's
continuous batching), interleaved in one run.

The design stage applies each of an anchor's K candidate actions to its description (one
`rewrite` call of anchors x K prompts: K prompts per description); an RL iteration rewrites
`rl.batch_size` episodes' states `rl.horizon` times (two calls of 16 different states).
Both are the demo config's environment (SmolLM2, greedy, 64 new tokens, its prompt) on the
shipped described movies; they are 90-95 % of those stages' wall time (the rest: E_D,
the design, the update). Each worker is a fresh process that times a cold call (compiles
included, as a stage starts) and then a warm one; checkouts alternate, `--repeats` times.

  python bench/bench_environment.py [--baseline-rev e3b5549] [--repeats 2] [--anchors 4]
Writes bench/results/environment.{json,md} (atomically).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DESCRIBED = REPO / "eagle_jax" / "world" / "embedded" / "described-9836d2c936f80f91.csv.gz"
BASELINE_REV = "e3b5549"  # main before continuous batching and shared-prefix prefill.
# Edits like the action library's generic candidates (12 = the demo's 6 + 6 per anchor).
ACTIONS = (
    "make it a comedy", "give it a darker tone", "set it in space", "make it a romance",
    "add a twist ending", "make it suitable for young children", "make it a musical",
    "set it in the 1920s", "make the villain the hero", "turn it into a heist",
    "make it a horror film", "tell it from the sidekick's point of view")


def worker(req: dict) -> dict:
  """Times the design rewrites and the RL iteration's rewrites, cold then warm."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  from eagle_jax.environment.build import build_environment  # pylint: disable=g-import-not-at-top

  # The demo config of the checkout under test (the worker runs in it).
  spec = importlib.util.spec_from_file_location("demo", pathlib.Path("experiments", "demo.py"))
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  config = demo.get_config("")
  texts, design, rl = req["texts"], req["design"], req["rl"]
  timings = {}
  for phase in ("cold", "warm"):
    # A new environment per phase: the compiled programs stay, its memo of greedy answers
    # does not, so the warm phase generates every rewrite again.
    environment = build_environment(config)
    start = time.perf_counter()
    out = environment.rewrite([texts[a] for a, _ in design], [ACTIONS[k] for _, k in design])
    timings[f"design_{phase}_s"] = time.perf_counter() - start
    timings["design_tokens"] = out.tokens
    start = time.perf_counter()
    states, tokens = [texts[a] for a, _ in rl[0]], 0
    for step in rl:  # Each step rewrites the states the previous one wrote.
      out = environment.rewrite(states, [ACTIONS[k] for _, k in step])
      states, tokens = out.texts, tokens + out.tokens
    timings[f"rl_{phase}_s"] = time.perf_counter() - start
    timings["rl_tokens"] = tokens
  timings["design_outputs"] = environment.rewrite(
      [texts[a] for a, _ in design[:4]], [ACTIONS[k] for _, k in design[:4]]).raw
  return timings


def run_worker(checkout: pathlib.Path, req: dict) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    req_path, resp_path = pathlib.Path(tmp, "req.json"), pathlib.Path(tmp, "resp.json")
    req_path.write_text(json.dumps(req))
    env = dict(os.environ, PYTHONPATH=str(checkout))
    env.pop("XLA_FLAGS", None)  # One CPU device, as `make demo` runs.
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--worker", "--request", str(req_path),
                           "--response", str(resp_path)], env=env, capture_output=True,
                          text=True, cwd=checkout)
    if proc.returncode != 0:
      tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
      raise SystemExit(f"error: worker in {checkout.name} exited {proc.returncode}: {tail[0]}")
    result = json.loads(resp_path.read_text())
    result["load_before"], result["load_after"] = load, os.getloadavg()[0]
    return result


def spread(values: list[float]) -> dict:
  return dict(median=statistics.median(values), min=min(values), max=max(values), n=len(values))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--baseline-rev", default=BASELINE_REV,
                      help="git revision to compare against (checked out in a temp worktree)")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--anchors", type=int, default=4, help="design anchors (x 12 actions)")
  parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--request", type=pathlib.Path, help=argparse.SUPPRESS)
  parser.add_argument("--response", type=pathlib.Path, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    args.response.write_text(json.dumps(worker(json.loads(args.request.read_text()))))
    return 0

  sys.path.insert(0, str(REPO))
  from eagle_jax.run import artifacts  # pylint: disable=g-import-not-at-top

  with gzip.open(DESCRIBED, "rt") as f:
    texts = [row["description"] for _, row in zip(range(64), csv.DictReader(f))]
  # Design: anchors x all 12 actions. RL: 16 episodes x 2 steps, one state per episode.
  design = [(a, k) for a in range(args.anchors) for k in range(len(ACTIONS))]
  rl = [[(16 + e, (e + t * 5) % len(ACTIONS)) for e in range(16)] for t in range(2)]
  req = dict(texts=texts, design=design, rl=rl)
  head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                        text=True).stdout.strip()
  dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                              cwd=REPO, capture_output=True, text=True).stdout.strip())
  results: dict[str, list[dict]] = {"baseline": [], "this": []}
  with tempfile.TemporaryDirectory() as tmp:
    baseline = pathlib.Path(tmp, "baseline")
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), args.baseline_rev],
                   cwd=REPO, check=True)
    try:
      for repeat in range(args.repeats):
        for name, checkout in (("baseline", baseline), ("this", REPO)):
          print(f"repeat {repeat + 1}/{args.repeats}: {name}", flush=True)
          results[name].append(run_worker(checkout, req))
    finally:
      subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO)
  summary = {}
  for name, runs in results.items():
    summary[name] = {key: spread([r[key] for r in runs])
                     for key in ("design_cold_s", "design_warm_s", "rl_cold_s", "rl_warm_s")}
  speedups = {key: summary["baseline"][key]["median"] / summary["this"][key]["median"]
              for key in summary["this"]}
  same = [r["design_outputs"] for r in results["baseline"] + results["this"]]
  report = dict(
      baseline_rev=args.baseline_rev, this_rev=head + ("+changes" if dirty else ""),
      repeats=args.repeats, design_prompts=len(design), rl_prompts=sum(map(len, rl)),
      summary=summary, speedup=speedups,
      tokens={name: {k: runs[0][k] for k in ("design_tokens", "rl_tokens")}
              for name, runs in results.items()},
      greedy_outputs_identical=all(s == same[0] for s in same),
      load=[(r["load_before"], r["load_after"]) for runs in results.values() for r in runs],
      machine=f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})",
      when=time.strftime("%Y-%m-%d %H:%M:%S"))
  artifacts.write_json(args.out / "environment.json", report)
  artifacts.write_text(args.out / "environment.md", markdown(report))
  print(markdown(report))
  return 0


def markdown(report: dict) -> str:
  lines = [f"# Environment LLM in the demo's stages: {report['this_rev']} vs "
           f"{report['baseline_rev']}", "",
           f"Design stage: {report['design_prompts']} rewrites (12 actions per description). "
           f"RL iteration: 2 steps x 16 episodes. SmolLM2, greedy, 64 new tokens. Median "
           f"[min-max] seconds of {report['repeats']} runs, checkouts alternating.", "",
           "| phase | baseline s | this s | speed-up |", "|---|---|---|---|"]
  for key, label in (("design_cold_s", "design stage, cold (compiles)"),
                     ("design_warm_s", "design stage, warm"),
                     ("rl_cold_s", "RL iteration, cold (compiles)"),
                     ("rl_warm_s", "RL iteration, warm")):
    b, t = report["summary"]["baseline"][key], report["summary"]["this"][key]
    lines.append(f"| {label} | {b['median']:.1f} [{b['min']:.1f}-{b['max']:.1f}] | "
                 f"{t['median']:.1f} [{t['min']:.1f}-{t['max']:.1f}] | "
                 f"{report['speedup'][key]:.2f}x |")
  lines += ["", f"- generated tokens: {report['tokens']}",
            f"- greedy rewrites of 4 design prompts identical across checkouts and runs: "
            f"{report['greedy_outputs_identical']}",
            f"- {report['machine']}; load average before/after each run: "
            + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in report["load"])]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  raise SystemExit(main())
