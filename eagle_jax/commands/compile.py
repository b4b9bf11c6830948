"""`compile`: the learner's update and the environment LLM's sampler compiled ahead of time
for the config's slice, before it is rented; prints each program's memory per device.

The slice is `config.aot`: hosts x devices_per_host devices. The update runs on the global
mesh of `config.mesh` (every host's devices), the sampler on one host's devices with the same
model axis, as `train` runs them. `--target` says whose compiler:

  cpu             fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count, set
                  here before JAX starts): the slice's partitioning and shapes, but the CPU
                  compiler's buffers (it computes bf16 in f32, so a bf16 model's temporaries
                  hold f32 copies of its weights): no verdict on whether it fits;
  tpu:TOPOLOGY    XLA's TPU compiler for e.g. tpu:v5e:4x4 or tpu:v6e:4x4, no TPU needed (it
                  needs libtpu: `pip install 'jax[tpu]==<the jax version>'`); exit status 1
                  when the peak exceeds aot.hbm_gib, 2 when XLA refuses a program for memory.

The environment LLM's shape comes from its files when they are here (`llm.model`: a .gguf,
an HF folder, a hub id in the local HF cache; no weights are read), else from
`config.aot.shape`. Memory per device, from XLA's `memory_analysis()`: arguments, outputs,
the outputs aliased to donated arguments, temporaries, code; total = arguments + outputs -
aliased + temporaries + code. The peak is an upper bound: the sampler's slots stay resident
while a prefill chunk runs, and the sampler's weights while the update runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time

from eagle_jax.commands import common
from eagle_jax.errors import EagleError

_COUNT_FLAG = "--xla_force_host_platform_device_count"
_GIB = 1 << 30


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--target", default="cpu",
                      help="cpu (fake CPU devices) or tpu:TOPOLOGY, e.g. tpu:v5e:4x4 (needs "
                           "libtpu) (default: %(default)s)")
  parser.add_argument("--out", help="also write the numbers to this JSON file")


def run(args) -> int:
  config = common.config_from_args(args, announce=False)
  hosts, per_host, hbm = _slice(config, args.config)
  _use_cpu_devices(hosts * per_host)  # Before JAX starts: its device count is fixed then.
  from eagle_jax import distributed
  from eagle_jax.run import artifacts

  start = time.perf_counter()
  devices, host, where = _devices(args.target, hosts, per_host)
  model = int(config.mesh.get("model", 1))
  if per_host % model:
    raise EagleError(f"config key mesh.model={model}: expected a divisor of the {per_host} "
                     "devices of a host (aot.devices_per_host)")
  # mesh_from_config checks config.mesh against the slice, on as many CPU devices.
  size = distributed.mesh_from_config(config).size
  try:
    learner = distributed.make_mesh(size, devices, model=model)
    sampler = distributed.make_mesh(per_host, host, model=model)
  except NotImplementedError as e:  # jax.make_mesh: axes that split a physical TPU axis.
    raise EagleError(f"config key mesh.model={model}: no mesh of it on {where} "
                     f"({str(e).splitlines()[0][:300]})") from None
  shape, source = _model_shape(config)
  print(f"target {args.target}: {where}; {config.llm.model}: {source}", flush=True)

  report = {"target": args.target, "hosts": hosts, "devices_per_host": per_host,
            "model": {"name": config.llm.model, "source": source,
                      "config": dataclasses.asdict(shape)}, "programs": {}}
  programs = report["programs"]
  update, details = _compile_update(config, learner)
  programs["update"] = _report("update", _mesh_text(learner) + details, update)
  decode, prefill, params_bytes, details = _compile_sampler(config, shape, sampler,
                                                            args.target)
  programs["decode"] = _report("sampler decode", _mesh_text(sampler) + details["decode"],
                               decode)
  programs["prefill"] = _report("sampler prefill chunk", details["prefill"], prefill)
  state_bytes = programs["decode"]["arguments"] - params_bytes
  sampler_peak = max(programs["decode"]["total"], programs["prefill"]["total"] + state_bytes)
  peak = sampler_peak + programs["update"]["total"]
  # Only a TPU compiler's buffers are the TPU's: XLA CPU computes bf16 in f32, and hoists f32
  # copies of bf16 weights out of the decode loop into its temporaries.
  fits = peak <= hbm if args.target != "cpu" else None
  report.update(llm_params_per_device=params_bytes, sampler_peak=sampler_peak, peak=peak,
                hbm=hbm, fits=fits, compile_s=round(time.perf_counter() - start, 1))
  verdict = {True: "fits", False: "OVER", None: "to compare with"}[fits]
  print(f"peak per device <= {_size(peak)}: sampler {_size(sampler_peak)} (weights "
        f"{_size(params_bytes)}, slots {_size(state_bytes)}) + update "
        f"{_size(programs['update']['total'])}; {verdict} {_size(hbm)} of HBM (aot.hbm_gib)")
  if fits is None:
    print("  (the CPU compiler's buffers: it computes bf16 in f32, with f32 copies of the "
          "weights; --target tpu:TOPOLOGY gives the TPU's)")
  print(f"compiled in {report['compile_s']:.0f} s")
  if args.out:
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")
  return 1 if fits is False else 0


def _slice(config, spec: str) -> tuple[int, int, float]:
  """(hosts, devices per host, bytes of memory per device) of `config.aot`."""
  aot = config.get("aot")
  if aot is None:
    raise EagleError(f"config {spec} has no aot section: expected aot.hosts, "
                     "aot.devices_per_host, aot.hbm_gib (see experiments/pod.py)")
  for key in ("hosts", "devices_per_host"):
    if not isinstance(aot.get(key), int) or aot.get(key) < 1:
      raise EagleError(f"config key aot.{key}={aot.get(key)!r}: expected an integer >= 1")
  if not isinstance(aot.get("hbm_gib"), (int, float)) or aot.get("hbm_gib") <= 0:
    raise EagleError(f"config key aot.hbm_gib={aot.get('hbm_gib')!r}: expected the GiB of "
                     "memory per device, > 0")
  return aot.hosts, aot.devices_per_host, float(aot.hbm_gib) * _GIB


def _use_cpu_devices(count: int) -> None:
  """Asks XLA for `count` CPU devices (the fake slice; with a TPU target, the mesh checks),
  and keeps JAX off any accelerator of this machine."""
  flags = re.sub(rf"{_COUNT_FLAG}=\S*", "", os.environ.get("XLA_FLAGS", "")).split()
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"{_COUNT_FLAG}={count}"])
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # Too late, unless its CPU backend has not started yet.
    import jax
    if len(jax.devices("cpu")) < count:
      raise EagleError(f"JAX started before `compile` could ask for {count} CPU devices: run "
                       "`python -m eagle_jax compile` as a process of its own")


def _devices(target: str, hosts: int, per_host: int) -> tuple[list, list, str]:
  """The target's devices (hosts x per_host of them), one host's, and what they are."""
  import jax
  count = hosts * per_host
  if target == "cpu":
    devices = jax.devices()[:count]
    return devices, devices[:per_host], f"{count} fake CPU devices ({hosts} hosts x {per_host})"
  platform, _, topology = target.partition(":")
  if platform != "tpu" or not topology:
    raise EagleError(f"--target {target!r}: expected cpu or tpu:TOPOLOGY, e.g. tpu:v5e:4x4")
  devices = _tpu_devices(topology, target)
  host = [d for d in devices if d.process_index == devices[0].process_index]
  if (len(devices), len(host)) != (count, per_host):
    raise EagleError(f"--target {target}: {len(devices)} devices, {len(host)} per host, "
                     f"but config keys aot.hosts x aot.devices_per_host = {hosts} x {per_host}")
  # A host's program spans only its own chips: XLA compiles it for a topology of just those
  # (the slice's device ids are out of its range), the box they fill in the slice.
  kind, _, dims = topology.rpartition(":")
  box = [max(d.coords[i] for d in host) - min(d.coords[i] for d in host) + 1
         for i in range(len(dims.split("x")))]
  host = _tpu_devices(f"{kind}:{'x'.join(map(str, box))}", target)
  return devices, host, f"{count} {devices[0].device_kind} chips ({hosts} hosts x {per_host})"


def _tpu_devices(topology: str, target: str) -> list:
  import jax
  from jax.experimental import topologies
  try:
    return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
  except Exception as e:  # noqa: BLE001 - libtpu missing, or a topology it does not know.
    detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise EagleError(f"--target {target}: XLA cannot describe TPU topology {topology} "
                     f"({detail}); a TPU target needs libtpu: pip install "
                     f"'jax[tpu]=={jax.__version__}'") from None


def _model_shape(config):
  """The environment LLM's ModelConfig and where it came from: its files when they are here,
  else config.aot.shape."""
  from eagle_jax.llm import registry, weights
  from eagle_jax.llm.config import ModelConfig
  try:
    files = registry.resolve(config.llm.model, download=False)
  except EagleError as e:
    absent = str(e)
  else:
    return weights.read_config(files), f"shape read from {files.path}"
  shape = config.aot.get("shape")
  if shape is None:
    raise EagleError(f"config key aot.shape: expected the architecture of llm.model="
                     f"{config.llm.model!r}, whose files are not here ({absent})")
  try:
    return ModelConfig(**shape.to_dict()), f"shape from config aot.shape ({absent})"
  except (TypeError, ValueError) as e:
    raise EagleError(f"config key aot.shape: {e} (expected the fields of "
                     "eagle_jax/llm/config.py ModelConfig)") from None


def _compile_update(config, mesh):
  """The RL update (`loop.train`'s) compiled for abstract params and a full batch, and the
  batch in words."""
  import jax
  import jax.numpy as jnp

  from eagle_jax.agent import nets, rl
  from eagle_jax.environment import features
  from eagle_jax.loop import train as train_loop
  from eagle_jax.world import text_encoder
  c = config.rl
  scorer, value_net = train_loop.networks(config, c.horizon)
  optimizer = rl.make_optimizer(c.policy_lr, c.value_lr, c.max_grad_norm)
  train_step = rl.make_train_step(optimizer, train_loop.rl_config(config, scorer, value_net),
                                  mesh)
  folder = text_encoder.encoder_folder(config.encoder.model)
  text_dim = text_encoder.BertConfig.from_json(folder / "config.json").hidden_size
  dims = features.dims_of(text_dim, config.als.dim)

  def fresh():
    params = {"policy": nets.init_policy(jax.random.key(0), scorer, **dims),
              "value": nets.init_value(jax.random.key(0), value_net, state_dim=dims["state_dim"],
                                       user_dim=dims["user_dim"])}
    return rl.TrainState.create(params, optimizer, jax.random.key(0))

  if c.batch_size % config.aot.hosts:  # Each host rolls out an equal share.
    raise EagleError(f"config key rl.batch_size={c.batch_size}: expected a multiple of the "
                     f"{config.aot.hosts} hosts (aot.hosts)")
  B, H = c.batch_size, c.horizon
  K = config.actions.num_generic + config.actions.num_personalised
  array = lambda *shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
  batch = rl.Batch(states=array(B, H, dims["state_dim"]), final_states=array(B, dims["state_dim"]),
                   users=array(B, dims["user_dim"]), actions=array(B, H, K, dims["action_dim"]),
                   masks=array(B, H, K, dtype=bool), chosen=array(B, H, dtype=jnp.int32),
                   rewards=array(B, H), ref_logits=array(B, H, K))
  return (_compile("the update", train_step.lower(jax.eval_shape(fresh), batch)),
          f"; {B} episodes x {H} steps x {K} candidates")


def _compile_sampler(config, shape, mesh, target: str):
  """The sampler's decode loop and one prefill chunk, compiled for `Sampler`'s layouts with
  all llm.batch_size slots in use: (decode, prefill, weight bytes per device, details)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from eagle_jax import distributed
  from eagle_jax.llm import model as model_lib, partitioning
  from eagle_jax.llm import sampler as sampler_lib
  from eagle_jax.llm.weights import resolve_dtype
  c = config.llm
  dtype = resolve_dtype(c.dtype, target.partition(":")[0])
  strategy = sampler_lib.make_strategy(c.temperature, c.top_k, c.top_p)
  # Token ids change no buffer size: any pad and EOS id compile the same program.
  program = sampler_lib._Program(shape, strategy, 0, (1,), np.dtype(dtype), mesh)
  rows = sampler_lib._round_up(c.batch_size, mesh.shape[distributed.DATA_AXIS])
  buffer = sampler_lib._round_up(c.max_new_tokens, sampler_lib._BUFFER_MULTIPLE)
  cache_length = max(c.prompt_buckets) + buffer
  chunk = sampler_lib.PREFILL_CHUNK  # What `make_sampler`'s Sampler prefills with.

  abstract = jax.eval_shape(lambda: model_lib.init_params(shape, jax.random.key(0), dtype))
  shardings = partitioning.param_shardings(abstract, mesh)
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
  params_bytes = sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
                     for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))
  # The slots as the sampler lays them out (its `_empty` constrains them).
  empty = sampler_lib._empty.trace(program=program, rows=rows, cache_length=cache_length,
                                   buffer=buffer).lower()
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       empty.out_info, _compile("the empty slots", empty).output_shardings)
  decode = _compile("the sampler's decode", sampler_lib._decode.lower(
      params, state, c.max_new_tokens, rows, program=program))
  # The first fill prefills every slot's prompt at once: the largest prefill program.
  logits = jax.ShapeDtypeStruct((rows, shape.vocab_size), jnp.float32,
                                sharding=state.tokens.sharding)
  vector = jax.ShapeDtypeStruct((rows,), jnp.int32)
  prefill = _compile("the sampler's prefill", sampler_lib._extend.lower(
      params, state.cache, vector, jax.ShapeDtypeStruct((rows, chunk), jnp.int32), vector,
      logits, jax.ShapeDtypeStruct((rows,), bool), program=program))
  details = {"decode": f"; {rows} slots, cache {cache_length} tokens ({max(c.prompt_buckets)} "
                       f"prompt + {buffer} output), {np.dtype(dtype).name}, "
                       f"{type(strategy).__name__}",
             "prefill": f"{rows} rows x {chunk} tokens"}
  return decode, prefill, params_bytes, details


def _compile(what: str, lowered):
  """`lowered` compiled; a program the target's memory cannot hold is a one-line error (the
  TPU compiler refuses it)."""
  import jax
  try:
    return lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    raise EagleError(f"{what} does not fit: {str(e).strip().splitlines()[0][:400]}") from None


def _mesh_text(mesh) -> str:
  return " x ".join(f"{name} {size}" for name, size in mesh.shape.items()) + " mesh"


def _report(name: str, what: str, compiled) -> dict:
  """Prints a compiled program's memory per device; returns it in bytes."""
  m = compiled.memory_analysis()
  sizes = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
           "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
           "code": m.generated_code_size_in_bytes}
  sizes["total"] = (sizes["arguments"] + sizes["outputs"] - sizes["aliased"]
                    + sizes["temporaries"] + sizes["code"])
  print(f"{name} ({what})\n  per device: "
        + ", ".join(f"{k} {_size(v)}" for k, v in sizes.items() if k != "total")
        + f"; total {_size(sizes['total'])}", flush=True)
  return sizes


def _size(n: float) -> str:
  for unit, scale in (("GiB", _GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{int(n)} B"
