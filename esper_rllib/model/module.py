"""``FactoredLSTM``: the reference policy as an RLlib 2.60 stateful ``TorchRLModule``.

blueprint embedding + features -> feature net -> LSTM -> LayerNorm -> one policy head per action
head (masked logits) and a value head that is either Q(s, op) (``q_op``, the reference) or V(s).
Sizes are model knobs (``model_config``). Initialisation: orthogonal weights (gain sqrt 2 in
hidden layers, 0.01 on policy outputs, ``value_head_gain`` on the value output), zero biases,
blueprint embedding N(0, 0.02), LSTM forget-gate bias 1.

With ``critic_trunk="mlp"`` the value head reads a feed-forward trunk of the current
observation alone (encoder, one hidden layer, LayerNorm; no state), which cannot tell episodes
apart by their history. With ``critic_trunk="separate"`` the value head reads a trunk of its
own (blueprint embedding, feature net, LSTM, LayerNorm: the same shapes, built after every
other layer so that the rest initialises exactly as with the shared trunk). Its recurrent
state travels next to the policy's in the same flat state dict (``critic_h``, ``critic_c``
beside ``h``, ``c``): RLlib's env runner and our learner batch carry every key of
``get_initial_state`` without knowing it. The critic's own trunk may drop its LayerNorms
(``critic_layernorm``); ``critic_dropout`` follows every hidden layer of the critic (its trunk
and the value head), active in training mode only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from torch import Tensor, nn

from envs.contract import EMPTY_BLUEPRINT, HEADS, N_OPS
from esper_rllib.model.distribution import make_factored_distribution, mask_logits
from esper_rllib.model.feature_norm import FeatureNorm, PiecewiseLinearEncoding
from esper_rllib.model.model_config import resolve_model_config
from esper_rllib.model.value_norm import PopArt

_RELU_GAIN = math.sqrt(2)
_POLICY_OUT_GAIN = 0.01

# Extra model output of every env-runner forward pass, stored with each sampled step: the
# critic's outputs, so the learner's GAE needs no forward pass of its own. Q(s, op) of every op
# ((..., N_OPS), q_op critic: the taken op's value and the expectation over ops both follow once
# the action is sampled) or V(s) ((..., 1), v critic).
CRITIC_OUT = "critic_out"
# State keys of the separate critic trunk (critic_trunk="separate"), beside the policy's h, c.
CRITIC_STATE = {"h": "critic_h", "c": "critic_c"}


def _linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int, out_gain: float,
         layernorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> [LayerNorm] -> ReLU [-> Dropout] per hidden width, then the output Linear.

    With ``layernorm``, every hidden layer but the last gets a LayerNorm (the deep value head).
    """
    layers: list[nn.Module] = []
    for i, width in enumerate(hidden):
        layers.append(_linear(in_dim, width, _RELU_GAIN))
        if layernorm and i < len(hidden) - 1:
            layers.append(nn.LayerNorm(width))
        layers += [nn.ReLU(), *_dropout(dropout)]
        in_dim = width
    layers.append(_linear(in_dim, out_dim, out_gain))
    return nn.Sequential(*layers)


def _dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def _norm(width: int, layernorm: bool) -> nn.Module:
    return nn.LayerNorm(width) if layernorm else nn.Identity()


_TRUNK_PARTS = ("blueprint_embedding", "feature_net", "lstm", "lstm_norm")
# The feed-forward critic trunk (critic_trunk="mlp"): the same encoder, then a hidden layer of
# the LSTM's width in the LSTM's place, so the value head is the same network.
_MLP_TRUNK_PARTS = ("blueprint_embedding", "feature_net", "hidden", "norm")


def _trunk(n_features: int, n_slots: int, cfg: dict[str, Any], layernorm: bool = True,
           dropout: float = 0.0) -> tuple[nn.Embedding, nn.Sequential, nn.LSTM, nn.Module]:
    """Blueprint embedding, feature net, LSTM and its LayerNorm, initialised as the module
    docstring says (the critic's own trunk: its LayerNorms and dropout per its knobs)."""
    hidden = cfg["lstm_hidden"]
    embedding = nn.Embedding(EMPTY_BLUEPRINT + 1, cfg["embed_dim"])
    nn.init.normal_(embedding.weight, std=0.02)
    feature_net = nn.Sequential(
        _linear(n_features + n_slots * cfg["embed_dim"], cfg["feature_dim"], _RELU_GAIN),
        _norm(cfg["feature_dim"], layernorm),
        nn.ReLU(),
        *_dropout(dropout),
    )
    lstm = nn.LSTM(cfg["feature_dim"], hidden, num_layers=1, batch_first=True)
    for name, param in lstm.named_parameters():
        if name.startswith("weight"):
            nn.init.orthogonal_(param, gain=1.0)
        else:
            # Gate order i, f, g, o: a forget bias of 1 (in both vectors) keeps memory early.
            nn.init.zeros_(param)
            param.data[hidden:2 * hidden] = 1.0
    return embedding, feature_net, lstm, _norm(hidden, layernorm)


def _critic_trunk(n_features: int, n_slots: int, cfg: dict[str, Any]) -> nn.ModuleDict | None:
    """The critic's own trunk: an LSTM one (separate), a feed-forward one (mlp), or None."""
    if cfg["critic_trunk"] == "shared":
        return None
    dropout = cfg["critic_dropout"]
    embedding, feature_net, lstm, lstm_norm = _trunk(n_features, n_slots, cfg,
                                                     cfg["critic_layernorm"], dropout)
    if cfg["critic_trunk"] == "separate":
        return nn.ModuleDict(zip(_TRUNK_PARTS, (embedding, feature_net, lstm, lstm_norm),
                                 strict=True))
    hidden = nn.Sequential(_linear(cfg["feature_dim"], cfg["lstm_hidden"], _RELU_GAIN),
                           nn.ReLU(), *_dropout(dropout))
    return nn.ModuleDict(zip(_MLP_TRUNK_PARTS, (embedding, feature_net, hidden, lstm_norm),
                             strict=True))


class FactoredLSTM(TorchRLModule, ValueFunctionAPI):
    """The factored-action LSTM actor-critic; its keys are in ``esper_rllib.model.model_config``."""

    def setup(self) -> None:
        # Defaults written back so RLlib's connectors find max_seq_len in module.model_config.
        self.model_config = cfg = resolve_model_config(self.model_config)
        self.critic_type = cfg["critic"]
        self.q_baseline = cfg["q_baseline"]
        self.nvec = tuple(int(n) for n in self.action_space.nvec)
        self.action_dist_cls = make_factored_distribution(self.nvec)

        obs = self.observation_space
        n_features = obs["features"].shape[0]
        n_slots = len(obs["blueprints"].nvec)
        hidden = cfg["lstm_hidden"]

        # The policy's trunk keeps its attribute names (checkpoints load parameters by name).
        (self.blueprint_embedding, self.feature_net, self.lstm,
         self.lstm_norm) = _trunk(n_features, n_slots, cfg)

        head_hidden = {h: [cfg["head_hidden"]] for h in HEADS}
        head_hidden["blueprint"] = cfg["blueprint_head_hidden"]
        self.policy_heads = nn.ModuleDict({
            head: _mlp(hidden, head_hidden[head], n, _POLICY_OUT_GAIN)
            for head, n in zip(HEADS, self.nvec, strict=True)
        })
        value_hidden = [hidden >> i for i in range(1, cfg["value_head_depth"])]
        value_in = hidden + (N_OPS if self.critic_type == "q_op" else 0)
        self.value_head = _mlp(value_in, value_hidden, 1, cfg["value_head_gain"],
                               layernorm=cfg["value_head_layernorm"],
                               dropout=cfg["critic_dropout"])
        # With PopArt the head outputs normalised values; every value leaving the module is
        # unnormalised (GAE, telemetry and env runners never see the normalised scale).
        self.value_norm = PopArt() if cfg["value_target_norm"] == "popart" else None
        # No parameters: where it is built does not change any layer's initial weights.
        self.feature_norm = (FeatureNorm(n_features) if cfg["feature_norm"] == "robust"
                             else None)
        bins = cfg["critic_feature_bins"]
        self.critic_encoding = PiecewiseLinearEncoding(n_features, bins) if bins else None
        # Last, so every layer above draws the same initial weights as with the shared trunk.
        self.critic_trunk = _critic_trunk(n_features * max(bins, 1), n_slots, cfg)
        # The critic trunk's recurrent state keys (none for a shared or feed-forward one).
        self.critic_state = CRITIC_STATE if cfg["critic_trunk"] == "separate" else {}

    def get_initial_state(self) -> dict[str, np.ndarray]:
        hidden = self.model_config["lstm_hidden"]
        keys = ["h", "c", *self.critic_state.values()]
        return {k: np.zeros(hidden, np.float32) for k in keys}

    def critic_parameters(self) -> list[nn.Parameter]:
        """What only the value loss trains: the value head, and the critic trunk if separate."""
        parts = [self.value_head] + ([self.critic_trunk] if self.critic_trunk is not None else [])
        return [p for part in parts for p in part.parameters()]

    # -- forward passes ---------------------------------------------------------------------
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        embeddings, state_out = self._embed(batch)
        critic_embeddings = embeddings
        if self.critic_trunk is not None:
            critic_embeddings, critic_state = self._embed(batch, critic=True)
            state_out.update(critic_state)
        return {
            Columns.ACTION_DIST_INPUTS: self._masked_logits(embeddings, batch),
            Columns.STATE_OUT: state_out,
            # What the value head reads (compute_values(batch, embeddings=...)): the critic
            # trunk's output when it has its own.
            Columns.EMBEDDINGS: critic_embeddings,
        }

    def critic_embeddings(self, batch: dict[str, Any]) -> Tensor:
        """(B, T, H): the value head's input, from the critic's trunk only (no policy head)."""
        return self._embed(batch, critic=self.critic_trunk is not None)[0]

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_env_runner(batch)

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_env_runner(batch)

    def _forward_env_runner(self, batch: dict[str, Any]) -> dict[str, Any]:
        # The env runner stores every extra output in the episode: the (B, 1, H) embeddings
        # become the critic's few outputs, so no embedding is shipped to the learner.
        with torch.no_grad():
            out = self._forward(batch)
            out[CRITIC_OUT] = self.critic_out(out.pop(Columns.EMBEDDINGS))
        return out

    def _embed(self, batch: dict[str, Any],
               critic: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """LSTM output after LayerNorm (B, T, H) and the final state {h, c} (B, H) of the
        policy's trunk, or with ``critic`` of the separate critic trunk (state keys
        ``CRITIC_STATE``)."""
        if critic and not self.critic_state:
            return self._embed_feed_forward(batch), {}
        if critic:
            parts, keys = self.critic_trunk.values(), CRITIC_STATE
        else:
            parts = (self.blueprint_embedding, self.feature_net, self.lstm, self.lstm_norm)
            keys = {"h": "h", "c": "c"}
        embedding, feature_net, lstm, lstm_norm = parts
        obs = batch[Columns.OBS]
        slots = embedding(obs["blueprints"].long()).flatten(-2)
        features = self.critic_features(obs) if critic else self.features(obs)
        x = feature_net(torch.cat([features, slots], dim=-1))
        state = {k: batch[Columns.STATE_IN][key] for k, key in keys.items()}
        if x.shape[1] == 1:
            # One step (the env runner's case): the LSTM cell itself. nn.LSTM's CPU path
            # (oneDNN) re-lays out its weights on every call, 7x the cost at 512 hidden.
            h, c = torch.lstm_cell(x[:, 0], (state["h"], state["c"]), lstm.weight_ih_l0,
                                   lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
            return lstm_norm(h.unsqueeze(1)), {keys["h"]: h, keys["c"]: c}
        h0, c0 = state["h"].unsqueeze(0), state["c"].unsqueeze(0)
        seq_lens = batch.get(Columns.SEQ_LENS)
        if seq_lens is not None:
            # Packed so the returned state is the one at each chunk's last real step, not after
            # the zero padding (what the end-of-sequence LSTM-state telemetry needs).
            packed = nn.utils.rnn.pack_padded_sequence(
                x, torch.as_tensor(seq_lens).cpu().long(), batch_first=True, enforce_sorted=False
            )
            out, (h, c) = lstm(packed, (h0, c0))
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=x.shape[1])
        else:
            out, (h, c) = lstm(x, (h0, c0))
        return lstm_norm(out), {keys["h"]: h.squeeze(0), keys["c"]: c.squeeze(0)}

    def _embed_feed_forward(self, batch: dict[str, Any]) -> Tensor:
        """(B, T, H): the feed-forward critic trunk on each step's observation alone."""
        trunk = self.critic_trunk
        obs = batch[Columns.OBS]
        slots = trunk["blueprint_embedding"](obs["blueprints"].long()).flatten(-2)
        x = trunk["feature_net"](torch.cat([self.critic_features(obs), slots], dim=-1))
        return trunk["norm"](trunk["hidden"](x))

    def features(self, obs: dict[str, Tensor]) -> Tensor:
        """The observation's float features as every trunk reads them (``feature_norm``)."""
        x = obs["features"].float()
        return x if self.feature_norm is None else self.feature_norm(x)

    def critic_features(self, obs: dict[str, Tensor]) -> Tensor:
        """The float features as the critic's own trunk reads them (``critic_feature_bins``)."""
        x = self.features(obs)
        return x if self.critic_encoding is None else self.critic_encoding(x)

    @torch.no_grad()
    def fit_features(self, features: Tensor) -> None:
        """Fits ``feature_norm``'s statistics, then the critic encoding's edges on the
        normalised features, from ``features`` (N, F: real steps), once: the first data the
        module trains on (``esper_rllib.model.feature_norm``)."""
        if self.feature_norm is not None and not bool(self.feature_norm.fitted):
            self.feature_norm.fit(features)
        if self.critic_encoding is not None and not bool(self.critic_encoding.fitted):
            x = features.float()
            self.critic_encoding.fit(x if self.feature_norm is None else self.feature_norm(x))

    def _masked_logits(self, embeddings: Tensor, batch: dict[str, Any]) -> Tensor:
        logits = torch.cat([self.policy_heads[h](embeddings) for h in HEADS], dim=-1)
        # Read the mask, never pop it: RLlib shares this batch between the GAE and loss passes.
        return mask_logits(logits, batch[Columns.OBS]["action_mask"])

    # -- critic -----------------------------------------------------------------------------
    def compute_values(self, batch: dict[str, Any], embeddings: Tensor | None = None) -> Tensor:
        """(B, T) values.

        With ``embeddings`` (the loss path): the regression target's prediction, Q(s, op taken)
        for ``q_op`` or V(s) for ``v`` (``predicted_value``).
        Without (forward run here): the baseline GAE uses (``baseline_value``), with the op
        taken on real steps and, on RLlib's artificial bootstrap step (LOSS_MASK False, which
        carries a stale copy of the previous action), the bootstrap's choice of op.
        The learner's GAE reads the same quantities off the env runner's ``CRITIC_OUT``.
        """
        if embeddings is not None:
            if self.critic_type == "v":
                return self._value(embeddings)
            # One op per step through the value head, not all six (this path has gradients).
            return self.value_of_ops(embeddings, self._ops_taken(batch))
        embeddings, _ = self._embed(batch)
        critic_out = self.critic_out(self.critic_embeddings(batch)
                                     if self.critic_trunk is not None else embeddings)
        if self.critic_type == "v":
            return self.baseline_value(critic_out, None)
        # Only the op head is needed here, not the whole policy.
        op_logits = mask_logits(self.policy_heads["op"](embeddings),
                                batch[Columns.OBS]["action_mask"][..., :N_OPS])
        ops = self._ops_taken(batch)
        loss_mask = batch.get(Columns.LOSS_MASK)
        if loss_mask is not None:
            ops = torch.where(loss_mask.bool(), ops, -1)
        return self.baseline_value(critic_out, op_logits, ops)

    def critic_out(self, embeddings: Tensor) -> Tensor:
        """(..., n): Q(s, op) of every op (``q_op``, n = 6) or V(s) (``v``, n = 1)."""
        if self.critic_type == "q_op":
            return self.q_all_ops(embeddings)
        return self._value(embeddings).unsqueeze(-1)

    def predicted_value(self, critic_out: Tensor, batch: dict[str, Any]) -> Tensor:
        """(B, T): what the critic regresses and EV measures: Q(s, op taken) or V(s)."""
        if self.critic_type == "v":
            return critic_out[..., 0]
        return critic_out.gather(-1, self._ops_taken(batch).unsqueeze(-1)).squeeze(-1)

    def baseline_value(self, critic_out: Tensor, op_logits: Tensor | None,
                       ops: Tensor | None = None) -> Tensor:
        """The value of a state that GAE uses, from ``critic_out`` (..., n).

        V(s) for ``v``. For ``q_op``/``expected``: sum over legal ops of pi(op|s) Q(s, op)
        (``op_logits``: the masked op-head logits). For ``q_op``/``sampled_op`` (the reference):
        Q(s, op taken) where ``ops`` (..,) holds an op, and Q(s, argmax op of the policy) where
        it holds -1 or is None: the bootstrap, as the reference bootstrapped. That baseline
        makes the taken op's advantage ~0 by construction, which is the ablation's point.
        """
        if self.critic_type == "v":
            return critic_out[..., 0]
        if self.q_baseline == "expected":
            return (torch.softmax(op_logits, dim=-1) * critic_out).sum(-1)
        greedy = op_logits.argmax(-1)
        ops = greedy if ops is None else torch.where(ops >= 0, ops.long(), greedy)
        return critic_out.gather(-1, ops.unsqueeze(-1)).squeeze(-1)

    def q_all_ops(self, embeddings: Tensor) -> Tensor:
        """(B, T, 6): Q(s, op) for every op (``q_op`` critic only)."""
        self._require_q_op("q_all_ops")
        ops = torch.arange(N_OPS, device=embeddings.device).expand(*embeddings.shape[:-1], N_OPS)
        expanded = embeddings.unsqueeze(-2).expand(*embeddings.shape[:-1], N_OPS, -1)
        return self._q(expanded, ops)

    def value_of_ops(self, embeddings: Tensor, ops: Tensor) -> Tensor:
        """(B, T): Q(s, ops) for the given (B, T) ops (``q_op`` critic only)."""
        self._require_q_op("value_of_ops")
        return self._q(embeddings, ops)

    def _q(self, embeddings: Tensor, ops: Tensor) -> Tensor:
        one_hot = nn.functional.one_hot(ops.long(), N_OPS).to(embeddings.dtype)
        return self._value(torch.cat([embeddings, one_hot], dim=-1))

    def _value(self, x: Tensor) -> Tensor:
        """(B, T) unnormalised output of the value head."""
        out = self.value_head(x).squeeze(-1)
        return out if self.value_norm is None else self.value_norm.denormalize(out)

    def _ops_taken(self, batch: dict[str, Any]) -> Tensor:
        if Columns.ACTIONS not in batch:
            raise ValueError("compute_values: the q_op critic needs batch[ACTIONS] (the op taken)")
        return batch[Columns.ACTIONS][..., 0].long()

    def _require_q_op(self, name: str) -> None:
        if self.critic_type != "q_op":
            raise ValueError(
                f"{name}: needs model_config['critic'] = 'q_op', got {self.critic_type!r}"
            )
