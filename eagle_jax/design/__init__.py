"""The G-optimal design (stage 4, after `actions/`): one-step rollouts of every candidate
(`one_step`), the jitted Frank–Wolfe design over their next-state latents (`goptimal`) and
the per-anchor subsets that train the reference (`subsets`)."""
