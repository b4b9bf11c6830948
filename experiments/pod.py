"""The paper's setting on a 16-chip TPU slice (v5e-16 or v6e-16: 4 hosts x 4 chips) with a 3B
instruct environment LLM, Qwen2.5-3B-Instruct, in bfloat16.

`llm.model` is a hub id: each host reads it from its HF cache, else downloads it (or pass a
checkpoint folder, --config.llm.model=DIR). Check that the slice holds it before renting one,
with no TPU: the first compiles for fake CPU devices (the layout and shapes), the others with
XLA's TPU compiler (it needs libtpu), which say whether it fits:

  python -m eagle_jax compile --config experiments/pod.py
  python -m eagle_jax compile --config experiments/pod.py --target tpu:v5e:4x4
  python -m eagle_jax compile --config experiments/pod.py --target tpu:v6e:4x4 \
      --config.aot.hbm_gib=32

then train on it:

  make tpu-train BUCKET=gs://my-bucket CONFIG=experiments/pod.py ACCELERATOR=v5litepod-16
  make tpu-train BUCKET=gs://my-bucket CONFIG=experiments/pod.py ACCELERATOR=v6e-16 \
      RUNTIME=v2-alpha-tpuv6e

`experiments/pod.py:tiny` is a seconds-long `compile` check used by the tests.
"""

import pathlib
import sys

import ml_collections

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import paper  # noqa: E402


def get_config(arg: str = ""):
  c = paper.get_config()
  c.workdir = "runs/pod"
  c.llm.model = "Qwen/Qwen2.5-3B-Instruct"  # bfloat16, as in paper.py.
  # paper.py's batch sizes: llm.batch_size 256 sampler slots per host (128 per chip pair) and
  # rl.batch_size 256 episodes (64 rolled out per host, 16 per chip in the update).
  # Each host's 4 chips sample as 2 x 2: 2-way tensor parallel (heads, MLP columns and
  # vocabulary split over a chip pair), 2 pairs each taking half the host's slots.
  # `compile --target tpu:v5e:4x4`, peak per chip: model 1 9.11 GiB, model 2 6.22 GiB (half
  # the weights, so a decode step reads about 4.3 GiB instead of 7.2), model 4 13.85 GiB
  # (Qwen2.5-3B's 2 KV heads are copied over 4 chips). v6e:4x4 at model 2: 6.25 GiB.
  c.mesh.data = -1
  c.mesh.model = 2

  # `compile`: the slice it compiles for, and the LLM's architecture when its files are not
  # on the machine that runs the check.
  c.aot = ml_collections.ConfigDict()
  c.aot.hosts = 4
  c.aot.devices_per_host = 4
  c.aot.hbm_gib = 16.0  # v5e; v6e: 32.
  # Qwen/Qwen2.5-3B-Instruct's config.json (model_type qwen2: q/k/v biases, tied embeddings).
  c.aot.shape = dict(arch="llama", vocab_size=151936, dim=2048, num_layers=36, num_heads=16,
                     num_kv_heads=2, head_dim=128, ffn_dim=11008, rope_base=1e6, norm_eps=1e-6,
                     tie_embeddings=True, qkv_bias=True)
  if arg == "tiny":  # The compile check in seconds: a 2-layer stand-in on 2 hosts x 2 devices.
    c.workdir = "runs/pod-tiny"
    c.llm.model = "stand-in"  # No such files: `compile` uses aot.shape (`train` would refuse).
    c.llm.batch_size = 8
    c.llm.max_new_tokens = 8
    c.llm.prompt_buckets = (64,)
    c.actions.num_generic = 3
    c.actions.num_personalised = 3
    c.reference.hidden = 32
    c.rl.horizon = 2
    c.rl.batch_size = 8
    c.mesh.model = 2
    c.aot.hosts = 2
    c.aot.devices_per_host = 2
    c.aot.shape = dict(arch="llama", vocab_size=512, dim=64, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=16, ffn_dim=128, tie_embeddings=True,
                       qkv_bias=True)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of pod.py (known: tiny)")
  return c
