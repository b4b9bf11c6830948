"""The EAGLE loop (stage 6): episodes in the environment (`rollout`), the policy gradient
(`train`), the held-out comparison (`evaluate`), every stage as a library function
(`stages`), the planted-signal check and hyper-parameter sweeps."""
