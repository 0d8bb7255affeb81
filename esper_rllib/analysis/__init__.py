"""What is measured after runs: loading a sweep (``sweep``), the statistics of its cells and
effects (``cells``, on ``stats``), the evaluation of checkpoints against scripted policies
(``evaluation``), the report's markdown and plots (``render``, ``plots``), the seed document's
post-mortem table (``postmortem``) and the learnability audit with its EV ceiling
(``audit``, ``learnability``).

May import ``run``, ``ppo``, ``model``, ``envs`` and ``tuning``'s result loading; never the
CLI.

The seed document: docs/seed-document.md."""
