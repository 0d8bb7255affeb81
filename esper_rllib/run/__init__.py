"""One run's configuration and life: the knobs, profiles and presets that build a validated
PPOConfig (``config``; the profiles and presets as pure data in ``profiles``), the env inputs
checked in the driver before Ray starts (``preflight``), and the trainer with its checkpoints
(``trainer``, ``checkpoint_policy``).

May import ``ppo``, ``model`` and ``envs``; never ``analysis`` or the CLI. ``tuning``
receives the config builder from here through the CLI."""
