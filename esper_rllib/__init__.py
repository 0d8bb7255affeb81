"""esper-rllib: PPO on the seed-morphogenesis env with RLlib's new API stack, by role.

- ``model``: the policy model (the factored LSTM RLModule, its masked action distribution, the
  model knobs, value-target normalisation); imports ``envs`` only.
- ``ppo``: the PPO learner (reference loss, GAE, batches and minibatches, telemetry and the
  metric names, callbacks, the env runner, the collapse monitor); imports ``model``.
- ``run``: one run's configuration and life (knobs, profiles and presets -> a PPOConfig,
  preflight checks, the trainer, checkpoint policies); imports ``ppo`` and ``model``.
- ``analysis``: what is measured after a run (the sweep report and its plots, statistics,
  post-mortem, the learnability audit, the evaluation of checkpoints); imports ``run`` down.
- ``cli`` and ``commands``: argument parsing and printing only; import everything below.

``failure_runs`` (the seed document's broken run and fix, as knob values) is data every layer
may import. ``tuning`` (Tune orchestration) imports only ``ppo.metric_names`` and
``failure_runs``, and receives the rest.

The seed document: docs/seed-document.md.
"""
