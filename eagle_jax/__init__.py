"""eagle_jax: Embedding-Aligned Guided LanguagE (arXiv 2406.00024) in JAX/Flax.

An RL agent steers a frozen LLM so its text lands in high-utility regions of a
domain's latent space. The packages follow the loop:

  world/        1. MovieLens, descriptions, profiles; ALS space Z, encoder E_D, utility
  environment/  2. the LLM rewrite step (or a synthetic one) and what the agent observes
  actions/      3. candidate edit actions per (movie, user) anchor
  design/       4. one-step rollouts and the G-optimal design over their next states
  agent/        5. scorer and value networks, REINFORCE/GAE/KL updates, the reference policy
  loop/         6. episodes, training, held-out evaluation, the stages as functions, sweeps

with `llm/` (the JAX LLM and its batched sampler), `run/` (run folder, artefacts,
checkpoints, logs) and `commands/` (the CLI, `python -m eagle_jax`).
"""

__version__ = "0.1.0"
