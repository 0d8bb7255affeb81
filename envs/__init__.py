"""The seed-morphogenesis Gymnasium environment (torch, gymnasium, numpy; never Ray).

Importing the package registers the environments, so ``gymnasium.make("envs:esper/...")``
works in any process, RLlib's remote env runners included.
"""

import gymnasium

ENV_ID = "esper/SeedMorphogenesis-v0"

gymnasium.register(id=ENV_ID, entry_point="envs.env:SeedMorphogenesisEnv")

# Probe environments (policy-and-ppo.md section 6): same spaces, instant steps.
PROBE_IDS = tuple(f"esper/Probe{n}-v0" for n in range(1, 6))
for _n, _probe_id in enumerate(PROBE_IDS, start=1):
    gymnasium.register(id=_probe_id, entry_point=f"envs.probes:Probe{_n}Env")
