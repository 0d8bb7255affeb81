"""The seed-morphogenesis Gymnasium environment (torch, gymnasium, numpy; never Ray).

Importing the package registers the environments, so ``gymnasium.make("envs:esper/...")``
works in any process, RLlib's remote env runners included.
"""

import gymnasium

ENV_ID = "esper/SeedMorphogenesis-v0"

# vector_entry_point: K sub-envs whose hosts train as one stacked model (envs.vector_env), for
# gymnasium.make_vec(..., vectorization_mode="vector_entry_point") and RLlib's
# gym_env_vectorize_mode="vector_entry_point"; the probes below have none.
gymnasium.register(id=ENV_ID, entry_point="envs.env:SeedMorphogenesisEnv",
                   vector_entry_point="envs.vector_env:SeedMorphogenesisVectorEnv")

# Probe environments (envs/probes.py: each tests one part of the RL machinery): same spaces,
# instant steps.
PROBE_IDS = tuple(f"esper/Probe{n}-v0" for n in range(1, 6))
for _n, _probe_id in enumerate(PROBE_IDS, start=1):
    gymnasium.register(id=_probe_id, entry_point=f"envs.probes:Probe{_n}Env")
