"""The policy model: the factored LSTM RLModule with its configurable deep value head
(``module``), the masked factored categorical with causal relevance (``distribution``), the
model knobs (``model_config``) and value-target normalisation (``value_norm``).

Owns the seed document's policy network and critic (Q of the op, or V). May import ``envs``
(the contract: heads, sizes, causal relevance), torch and RLlib's RLModule API; nothing else of
``esper_rllib``.

The seed document: docs/seed-document.md."""
