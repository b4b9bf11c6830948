"""The CLI's commands, one module per EAGLE stage: each parses its flags, calls the stage's
library function and prints what it did."""

# name -> (module:function, one-line help). Each function takes the parsed argparse namespace.
COMMANDS = {
    "describe": ("eagle_jax.commands.describe:run",
                 "the LLM writes each movie's plot after its MovieLens fields (one text format)"),
    "prepare": ("eagle_jax.commands.prepare:run",
                "load MovieLens, fit the ALS latent space, train the text encoder E_D"),
    "actions": ("eagle_jax.commands.actions:run",
                "choose (movie, user) anchors and make their candidate edit actions"),
    "design": ("eagle_jax.commands.design:run",
               "one-step rollouts of every candidate + G-optimal design over next states"),
    "train-reference": ("eagle_jax.commands.train_reference:run",
                        "SFT of the reference policy (uniform | optimistic | G-optimal)"),
    "train": ("eagle_jax.commands.train:run",
              "EAGLE policy gradient in the real environment, then held-out evaluation"),
    "check-signal": ("eagle_jax.commands.check_signal:run",
                     "the learner on a synthetic environment with planted signal: rho x updates"),
    "export": ("eagle_jax.commands.export:run", "write the trained params for inference"),
    "steer": ("eagle_jax.commands.steer:run",
              "edit a movie for a user with a trained policy, step by step"),
    "sweep": ("eagle_jax.commands.sweep:run",
              "run every point of a hyper-parameter grid (get_sweep() in the config file)"),
    "generate": ("eagle_jax.commands.generate:run",
                 "sample text from an LLM (smollm2, gemma3-270m, HF dir or .gguf)"),
    "compile": ("eagle_jax.commands.compile:run",
                "compile the update and the LLM sampler for the config's slice: memory per device"),
}
