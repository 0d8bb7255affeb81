"""The PPO learner and what it measures: the reference loss (``loss``), GAE over real steps
(``gae``), the learner's batch and whole-episode minibatches (``learner_batch``,
``minibatches``), the learner itself (``learner``), every metric's definition and name
(``telemetry``, ``metric_names``: the one list ``tuning`` imports), env-side callbacks and the
env runner (``callbacks``, ``env_runner``) and the collapse monitor (``collapse``).

Owns explained variance, clip ratio, KL, Q-spread and the collapse verdict. May import
``model`` and ``envs``; never ``run``, ``analysis`` or the CLI."""
