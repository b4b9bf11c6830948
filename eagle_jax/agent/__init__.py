"""The agent (stage 5): the pure-functional scorer and value networks (`nets`), the
REINFORCE + GAE + KL losses and jitted data-parallel updates (`rl`), and the reference
policy's targets and SFT (`reference`)."""
