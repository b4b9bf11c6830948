"""The embedded-default EAGLE run: MovieLens ml-latest-small, SmolLM2-135M, MiniLM E_D.

Runs offline on 2 CPU cores (`make demo`):

  python -m eagle_jax describe --config experiments/demo.py
  python -m eagle_jax prepare --config experiments/demo.py
  python -m eagle_jax actions --config experiments/demo.py
  python -m eagle_jax design --config experiments/demo.py
  python -m eagle_jax train-reference --config experiments/demo.py
  python -m eagle_jax train --config experiments/demo.py

`experiments/demo.py:smoke` is a seconds-long variant used by the tests;
`experiments/demo.py:qwen` swaps the environment for Qwen2.5-Coder 0.5B Instruct (`make models`)
on the same described catalogue and E_D.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = "runs/demo"

  # MovieLens: "embedded" (ml-latest-small shipped in the package), a GroupLens directory
  # (ml-latest / ml-25m / ml-100k format), or "tfds:movielens/25m-ratings" (needs TF + network).
  c.data = ml_collections.ConfigDict()
  c.data.source = "embedded"
  # Item text: "described" (the `describe` stage: MovieLens fields + an LLM-written plot, the
  # one format of catalogue, anchors and rewrites), "movielens" (the fields alone: title,
  # year, genres, top user tags) or a CSV `movieId,description`.
  c.data.descriptions = "described"
  c.data.num_tags = 5  # Most frequent user tags written into a MovieLens description.
  c.data.min_ratings_per_movie = 20  # Movies with fewer ratings have unreliable latent vectors.

  # `describe`: an LLM writes each movie's plot after its fields, greedily, in the format
  # rewrites keep (used when data.descriptions = "described"). Its own model, so environment
  # LLMs are compared on the same catalogue text and the same E_D.
  c.describe = ml_collections.ConfigDict()
  c.describe.model = "smollm2"
  c.describe.prompt = (
      "Facts about a movie: {fields}\nWrite a short description of this movie in at most 3 "
      "sentences: what happens, its tone, and who will enjoy it. Answer with the description "
      "only.")
  c.describe.max_new_tokens = 64
  c.describe.batch_size = 32

  # Behavioural latent space: weighted ALS on the rating matrix.
  c.als = ml_collections.ConfigDict()
  c.als.dim = 8  # Small dims + strong regularisation are far more predictable from text.
  c.als.reg = 20.0
  c.als.iterations = 10
  c.als.implicit = False  # True: implicit-feedback weighting c = 1 + alpha * r.
  c.als.alpha = 10.0
  c.als.test_fraction = 0.2  # Held-out ratings for RMSE / recall@k.
  c.als.recall_k = 10

  # Text encoder E_D = regression head on frozen all-MiniLM-L6-v2 embeddings.
  c.encoder = ml_collections.ConfigDict()
  c.encoder.model = "minilm"  # Or a sentence-transformers folder with model.safetensors.
  c.encoder.max_length = 128
  c.encoder.batch_size = 64
  c.encoder.head_hidden = 256  # 0: a linear (ridge) head.
  c.encoder.head_lr = 3e-3
  c.encoder.head_steps = 1000
  c.encoder.head_weight_decay = 3.0  # Ridge lambda of the linear path (best at every dim).
  c.encoder.head_hidden_weight_decay = 30.0  # The MLP path is penalised harder.
  c.encoder.test_fraction = 0.2  # Movies never seen by the head, for R^2 / cosine.
  # > 0: a described text's fields and plot are embedded apart and mixed with this weight on
  # the plot; 0: one embedding of the whole text. Held-out R^2 / user-rank corr on SmolLM2's
  # descriptions: 0 -> 0.219 / 0.426, 0.25 -> 0.272 / 0.490, 0.5 -> 0.256 / 0.468 (the
  # fields alone: 0.276 / 0.501): the fields carry the signal, the plot lets edits move z.
  c.encoder.plot_weight = 0.25

  # Content-gap utility U(z; u) = <z_u, z> + lam * sum_{k-NN} ||z - z'||.
  c.utility = ml_collections.ConfigDict()
  c.utility.lam = 0.1
  c.utility.k = 3
  c.utility.cap = 0.0  # > 0: clip the distance bonus at this value.
  c.utility.exclude_anchor = True

  # Environment LLM.
  c.llm = ml_collections.ConfigDict()
  c.llm.model = "smollm2"  # "smollm2", "gemma3-270m", an HF checkpoint dir or a .gguf file.
  c.llm.dtype = "auto"  # float32 on CPU, bfloat16 on GPU/TPU: the fastest measured.
  # On one CPU device, decode steps run in native kernels (`llm/native_kernels.py`): products
  # read the GGUF's 4/8-bit blocks, 5x fewer bytes than float32 weights, and attention over
  # the cache avoids XLA's tiny per-head GEMMs.
  c.llm.native_kernels = True
  c.llm.max_new_tokens = 64  # ~3 sentences; rewrites are cut at the last sentence end.
  # Greedy decoding: a deterministic environment. SmolLM2's sampled rewrites (0.7) vary so
  # much that the same action's one-step utility correlates 0.06 across two seeds, i.e. the
  # sampling noise swamps the action's effect; greedy rewrites also degenerate less.
  c.llm.temperature = 0.0
  c.llm.top_k = 0
  c.llm.top_p = 1.0  # A nucleus needs a full-vocabulary sort per token: 2x slower on CPU.
  c.llm.batch_size = 16
  c.llm.prompt_buckets = (128, 256, 512)

  # The environment transition: the LLM rewrites the description following the action.
  c.env = ml_collections.ConfigDict()
  # A described state keeps its fields: the answer is its new plot
  # (`eagle_jax/environment/rewrite.py`).
  # Asked to "rewrite its plot", SmolLM2 and Qwen 0.5B copied it in about half the one-step
  # rewrites (rejected as echoes); this wording halved that on 12 design anchors.
  c.env.prompt_template = (
      "Here is a movie: {entity}\n{context}A producer wants this change: {action}. Write the "
      "plot of the new version in at most 3 sentences, different from the old one. Answer "
      "with the new plot only.")
  c.env.context_template = "It is written for this viewer: {profile}\n"
  c.env.personalise = False  # Put the user's profile into the rewrite prompt.
  # "llm": the environment LLM above. "synthetic": no LLM; each edit moves the text
  # embedding by the action's plus fixed noise, calibrated so the one-step gain correlates
  # synthetic_rho with the policy's predicted-gain feature (`eagle_jax/environment/synthetic.py`):
  # the check that the learner finds a signal of known strength.
  c.env.kind = "llm"
  c.env.synthetic_rho = 0.3

  # Anchors and candidate actions (paper: 50 generic + 50 personalised per movie).
  c.actions = ml_collections.ConfigDict()
  # (movie, user) pairs; a held-out fraction (unseen movies) is kept for evaluation.
  c.actions.num_anchors = 96
  c.actions.heldout_fraction = 0.25
  c.actions.num_generic = 6  # Paper: 50 + 50; every candidate costs one rewrite in `design`.
  c.actions.num_personalised = 6
  c.actions.source = "library"  # "library" | "llm" | "mixed"

  # A user's profile, built from their MovieLens ratings and tags: the context of
  # personalised actions and prompts (`eagle_jax/world/profiles.py`).
  c.profiles = ml_collections.ConfigDict()
  c.profiles.like_threshold = 4.0  # Ratings >= this are loved movies.
  c.profiles.dislike_threshold = 2.5  # Ratings <= this are disliked movies.
  c.profiles.num_liked = 5
  c.profiles.num_disliked = 3
  c.profiles.num_genres = 3
  c.profiles.num_disliked_genres = 2
  c.profiles.num_tags = 5

  # Myopic G-optimal design over the candidates' next-state latents (paper: subsets of 10).
  c.design = ml_collections.ConfigDict()
  # Anchors that get one-step rollouts (K rewrites each) and train the reference; 0: all.
  # RL trains on every training anchor: many anchors, few visits each, so the policy
  # cannot memorise anchors and must learn what transfers to unseen ones.
  c.design.num_anchors = 16
  c.design.subset_size = 8  # >= latent dim, so the subset design can span Z (paper: 10)
  c.design.eps = 0.01
  c.design.max_iters = 10_000
  c.design.method = "frank_wolfe"  # or "rejection" (the paper's sampler)
  c.design.rejection_c = 1.0
  c.design.subset = "top"  # "top" support weights or "sample" from the design

  # Reference policy pi_ref: SFT of the scorer network on a distribution over candidates.
  c.reference = ml_collections.ConfigDict()
  c.reference.kind = "goptimal"  # "uniform" | "optimistic" | "goptimal"
  c.reference.hidden = 256
  c.reference.lr = 1e-3
  c.reference.steps = 300  # The kept params are those with the lowest held-out KL.
  c.reference.weight_decay = 0.1  # AdamW: with label smoothing, keeps it from memorising.
  c.reference.label_smoothing = 0.2  # Mass spread over all candidates, not only the design's.

  # Policy gradient: REINFORCE + value baseline + GAE, alpha * KL(pi || pi_ref).
  c.rl = ml_collections.ConfigDict()
  c.rl.horizon = 2  # Paper: 5 edits; 2 keeps the CPU demo in minutes.
  # `check-signal` at rho = 0.3: 20 updates recover 63 % of the features' gain, 50 74 %.
  # 16 keep `make demo` near 25 min on 2 cores (an iteration is 30-50 s of SmolLM2).
  c.rl.iterations = 16
  c.rl.batch_size = 16  # Episodes per update (global batch, sharded over devices).
  c.rl.policy_lr = 3e-4
  c.rl.value_lr = 1e-3
  c.rl.gamma = 1.0
  c.rl.gae_lambda = 0.95
  # `check-signal` at rho = 0.3, 20 updates: alpha 0 recovers 67 %, 0.05 63 %, 0.2 45 %.
  c.rl.kl_coef = 0.05
  c.rl.entropy_coef = 0.01
  c.rl.value_coef = 0.5
  c.rl.max_grad_norm = 1.0
  # "delta": per-step utility differences U(x_t+1) - U(x_t); "gain": U(x_H) - U(x_0) at the
  # end; "terminal": U(x_H) (the paper's; its mean over anchors swamps any action's effect).
  c.rl.reward = "delta"
  c.rl.normalize_advantages = True  # Per batch: no common offset moves every logit.
  # Candidates of a later state x_t: "reuse" the anchor's, or "regenerate" them from x_t
  # with config.actions.source (library draws, or the LLM reading the current description).
  c.rl.candidates = "reuse"

  # Devices: `data` x `model` (model > 1 splits the environment LLM's heads, MLP columns and
  # vocabulary over that many devices of one host; data -1 takes every device left).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.model = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 2
  c.checkpoint.keep = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.episodes_per_pair = 1  # Greedy environment: argmax policies would repeat exactly.
  c.eval.best_of_n = 2
  c.eval.greedy_baseline = False  # K rewrites per decision: the costliest baseline.
  c.eval.predicted_baseline = True  # argmax of the predicted-gain feature: no look-ahead.

  if arg == "smoke":  # The whole loop in seconds: tests pair it with a tiny random decoder.
    c.workdir = "runs/smoke"
    c.data.descriptions = "movielens"  # No LLM needed before `prepare`.
    c.describe.max_new_tokens = 8
    c.data.min_ratings_per_movie = 100
    c.als.iterations = 3
    c.encoder.head_steps = 50
    c.llm.max_new_tokens = 8
    c.llm.batch_size = 8
    c.actions.num_anchors = 6
    c.actions.heldout_fraction = 1 / 3
    c.actions.num_generic = 3
    c.actions.num_personalised = 3
    c.design.subset_size = 4
    c.reference.hidden = 32
    c.reference.steps = 20
    c.rl.iterations = 3
    c.rl.batch_size = 8
    c.checkpoint.every = 1
    c.eval.episodes_per_pair = 1
  elif arg == "qwen":  # A 0.5B instruct environment (`make models` fetches it, 491 MB).
    c.workdir = "runs/demo-qwen"
    c.llm.model = "models/qwen2.5-coder-0.5b-instruct.gguf"
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of demo.py (known: smoke, qwen)")
  return c
