"""`steer`: apply a trained EAGLE policy to any movie and user, step by step.

  python -m eagle_jax steer --config experiments/demo.py --movie "Toy Story (1995)" --user 42

Prints the H-step edited description with the action taken and the utility at each step,
and why a step's rewrite was rejected (the text then stays as it was).
"""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)
  parser.add_argument("--checkpoint", help="an `export` directory or a training checkpoints "
                      "directory (default: <workdir>/checkpoints, latest step)")
  parser.add_argument("--movie", required=True,
                      help='"Title (Year)", a title, or movieId:<id>')
  parser.add_argument("--user", type=int, required=True, help="MovieLens user id")
  parser.add_argument("--seed", type=int, default=0, help="environment sampling seed")


def run(args) -> int:
  from eagle_jax.actions import anchors
  from eagle_jax.environment import build as runtime
  from eagle_jax.loop import rollout, train
  from eagle_jax.run import checkpoint, folder as run_folder
  from eagle_jax.world import prepared
  config = common.config_from_args(args, announce=False)
  world = prepared.load(config)
  item = world.item_of_query(args.movie)
  world.user_row(args.user)  # Fails early with the valid id range.
  path = args.checkpoint or run_folder.RunFolder(config) / run_folder.CHECKPOINTS
  policy = checkpoint.restore_params(path)["policy"]
  environment = runtime.build_environment(config)
  table = anchors.single_anchor(world, config, item, args.user,
                                runtime.action_generator(environment, config))
  runner = rollout.make_runner(config, world, table, environment)
  scorer, _ = train.networks(config, config.rl.horizon)
  ep = runner.run([0], rollout.scorer_policy(scorer, policy, greedy=True), seed=args.seed)
  print(f"{world.title(item)} for user {args.user}")
  for t in range(config.rl.horizon + 1):
    print(f"\nx_{t}: U = {ep.utility[0, t]:.3f} (rating {ep.rating[0, t]:.3f}, "
          f"distance {ep.distance[0, t]:.3f})")
    print(f"  {ep.texts[0][t]}")
    if t < config.rl.horizon:
      print(f"  action: {ep.actions[0][t]}")
      if ep.rejected[0][t]:
        print(f"  rewrite rejected ({ep.rejected[0][t]}): the environment's output was "
              f"degenerate, so x_{t + 1} keeps x_{t}")
  return 0
