"""The knob table, profiles, presets and the PPOConfig builder (esper_rllib.run.config).

The seed document: docs/seed-document.md."""

import math

import pytest

from envs import ENV_ID
from envs.contract import action_space, observation_space
from esper_rllib.ppo.learner_config import LEARNER_DEFAULTS
from esper_rllib.run.config import (
    KNOBS,
    PRESETS,
    PROFILES,
    ConfigError,
    build_ppo_config,
    parse_set,
    resolve_knobs,
)


def test_profiles_have_the_experiment_sizes():
    quick = resolve_knobs("quick")
    assert (quick["task"], quick["max_epochs"], quick["episodes_per_batch"],
            quick["lstm_hidden"]) == ("synth_impaired", 40, 4, 64)
    standard = resolve_knobs("standard")
    assert (standard["task"], standard["n_train"], standard["max_epochs"],
            standard["episodes_per_batch"], standard["iterations"],
            standard["lstm_hidden"]) == ("synth_impaired", 2048, 60, 4, 24, 512)
    seed = resolve_knobs("cifar")
    assert (seed["task"], seed["n_train"], seed["max_epochs"], seed["episodes_per_batch"],
            seed["iterations"], seed["lstm_hidden"]) == ("cifar_impaired", 50_000, 150, 64, 32, 512)
    # The seed document's settings hold in every profile.
    for knobs in (quick, standard, seed):
        assert (knobs["lr"], knobs["entropy_coef"], knobs["max_grad_norm"], knobs["gamma"],
                knobs["lambda_"], knobs["num_epochs"]) == (1e-4, 0.05, 1.0, 0.995, 0.98, 1)


def test_layers_apply_in_order_defaults_profile_preset_overrides():
    knobs = resolve_knobs("quick", "seed_before", {"value_coef": 0.25, "lr": 3e-4})
    assert knobs["value_head_depth"] == 2 and knobs["value_head_layernorm"] is False
    assert knobs["value_head_gain"] == 1.0
    assert knobs["value_coef"] == 0.25  # the override beats the preset
    assert knobs["lr"] == 3e-4 and knobs["max_epochs"] == 40
    assert knobs["reward"] == "aligned", "every profile defaults to the reward that tracks "\
        "accuracy"
    after = resolve_knobs("quick", "seed_after")
    assert (after["value_head_depth"], after["value_head_layernorm"], after["value_head_gain"],
            after["value_coef"]) == (4, True, 0.01, 1.0)


def test_parse_set_types_values_per_knob():
    parsed = parse_set(["lr=3e-4", "value_head_layernorm=false", "n_train=256",
                        "value_clip=none", "blueprint_head_hidden=32,16", "critic=v"])
    assert parsed == {"lr": 3e-4, "value_head_layernorm": False, "n_train": 256,
                      "value_clip": None, "blueprint_head_hidden": (32, 16), "critic": "v"}


def test_unknown_keys_name_the_near_misses_and_list_the_known_ones():
    with pytest.raises(ConfigError, match="unknown key 'lstm_size'; did you mean 'lstm_hidden'"
                       ) as err:
        parse_set(["lstm_size=64"])
    assert f"`esper-rllib knobs` lists all {len(KNOBS)}" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key 'zzz' \\(`esper-rllib knobs`"):
        resolve_knobs("quick", overrides={"zzz": 64})
    with pytest.raises(ConfigError, match="unknown profile 'quik'; did you mean 'quick'"):
        resolve_knobs("quik")
    with pytest.raises(ConfigError, match=f"unknown profile 'huge'; known: {', '.join(PROFILES)}"):
        resolve_knobs("huge")
    with pytest.raises(ConfigError, match=f"unknown preset 'x'; known: {', '.join(PRESETS)}"):
        resolve_knobs("quick", "x")


@pytest.mark.parametrize(("item", "allowed"), [
    ("critic=q", "allowed: q_op | v"),
    ("q_baseline=mean", "allowed: sampled_op | expected"),
    ("ratio_mode=sum", "allowed: per_head | joint"),
    ("task=mnist", "allowed: synth_impaired | synth_baseline | cifar_impaired | cifar_baseline"),
    ("value_head_layernorm=maybe", "allowed: true | false"),
    ("lr=fast", "allowed: float >= 0"),
    # 0 would turn RLlib's clipping off (it clips only when grad_clip is truthy).
    ("max_grad_norm=0", "allowed: float > 0"),
    ("value_head_gain=0", "allowed: float > 0"),
    ("critic_lr_scale=0", "allowed: float > 0"),
    ("minibatches=0", "allowed: int >= 1"),
    ("critic_steps=-1", "allowed: int >= 0"),
    ("critic_steps=2.5", "allowed: int >= 0"),
    ("critic_replay=-3", "allowed: int >= 0"),
    ("critic_trunk=both", "allowed: shared | separate | mlp"),
    ("value_target_norm=running", "allowed: none | popart"),
    ("gamma=1.5", "allowed: 0 <= float <= 1"),
    ("n_train=0", "allowed: int >= 1 | none"),
    ("episodes_per_batch=2.5", "allowed: int >= 1"),
    ("blueprint_head_hidden=64,x", "allowed: comma-separated ints >= 1"),
    ("env_device=tpu", "allowed: cpu|auto|cuda|cuda:\\d+"),
    ("lr", "expected key=value"),
])
def test_bad_values_name_the_key_and_the_allowed_values(item, allowed):
    with pytest.raises(ConfigError) as err:
        parse_set([item])
    message = str(err.value)
    assert message.startswith(item.partition("=")[0]) or message.startswith("--set")
    assert allowed in message and "\n" not in message


def test_settings_that_only_conflict_together_are_rejected():
    with pytest.raises(ConfigError, match="episodes_per_batch=4: must be a multiple of .* = 3"):
        resolve_knobs("quick", overrides={"num_env_runners": 3})
    with pytest.raises(ConfigError, match="max_seq_len=10: .* >= max_epochs \\+ 1 = 41"):
        resolve_knobs("quick", overrides={"max_seq_len": 10})
    with pytest.raises(ConfigError, match="gpus_per_env_runner=0.5: needs num_env_runners >= 1"):
        resolve_knobs("quick", overrides={"gpus_per_env_runner": 0.5})
    # A minibatch holds whole episodes: at most one per episode of the batch (4 on quick).
    with pytest.raises(ConfigError, match="minibatches=5: .* allowed: 1..episodes_per_batch = 4"):
        resolve_knobs("quick", overrides={"minibatches": {"grid_search": [1, 5]}})
    # The module's own limits, checked before Ray starts.
    with pytest.raises(ConfigError, match="value_head_depth"):
        resolve_knobs("quick", overrides={"value_head_depth": 9})


def test_search_spaces_are_validated_per_value_and_only_where_copied():
    knobs = resolve_knobs("quick", overrides={"value_head_gain": {"grid_search": [1, 0.01]}})
    assert knobs["value_head_gain"] == {"grid_search": [1.0, 0.01]}
    with pytest.raises(ConfigError, match="critic='x'"):
        resolve_knobs("quick", overrides={"critic": {"grid_search": ["v", "x"]}})
    with pytest.raises(ConfigError, match="max_epochs: a search space is not allowed"):
        resolve_knobs("quick", overrides={"max_epochs": {"grid_search": [10, 20]}})


def test_built_config_has_the_reference_ppo_settings():
    from esper_rllib.model.module import FactoredLSTM
    from esper_rllib.ppo.callbacks import EsperCallbacks
    from esper_rllib.ppo.learner import FactoredPPOLearner

    knobs = resolve_knobs("quick", "seed_after", {"n_train": 256, "rng_seed": 7})
    config = build_ppo_config(knobs)
    assert config.env == f"envs:{ENV_ID}"
    assert config.env_config["task"] == "synth_impaired" and config.env_config["n_train"] == 256
    assert config.env_config["max_epochs"] == 40 and config.env_config["device"] == "cpu"
    # One gradient step over whole episodes: a batch of 4 episodes x 40 epochs, no minibatches.
    assert config.batch_mode == "complete_episodes"
    assert config.train_batch_size_per_learner == 160 and config.minibatch_size is None
    assert config.num_epochs == 1
    assert config.model_config["max_seq_len"] == 41
    assert config.model_config["value_head_depth"] == 4
    assert config.model_config["value_head_gain"] == 0.01
    assert (config.lr, config.gamma, config.lambda_, config.clip_param) == (1e-4, 0.995, 0.98, 0.2)
    assert config.grad_clip == 1.0 and config.grad_clip_by == "global_norm"
    assert math.isinf(config.vf_clip_param) and config.use_kl_loss is False
    # Every loss knob at its default, but the preset's value_coef.
    assert config.learner_config_dict == {**LEARNER_DEFAULTS, "value_coef": 1.0}
    assert config.model_config["value_target_norm"] == "none"
    assert config.learner_class is FactoredPPOLearner
    assert config.callbacks_class is EsperCallbacks
    # The spec names only the class: its model_config would override Tune grids.
    assert config.rl_module_spec.module_class is FactoredLSTM
    assert not config.rl_module_spec.model_config
    assert config.seed == 7 and config.restart_failed_env_runners is True
    assert config.sample_timeout_s is None  # an iteration waits for its episodes
    assert config.num_learners == 0 and config.num_gpus_per_learner == 0


def test_learner_knobs_reach_the_learner_and_the_module():
    knobs = resolve_knobs("quick", overrides={"critic_lr_scale": 10, "minibatches": 4,
                                              "value_target_norm": "popart"})
    config = build_ppo_config(knobs)
    assert config.learner_config_dict["critic_lr_scale"] == 10.0
    assert config.learner_config_dict["minibatches"] == 4
    assert config.model_config["value_target_norm"] == "popart"
    assert config.minibatch_size is None  # RLlib's would cut sequences


def test_gpu_knobs_reach_learner_env_runners_and_the_env_device():
    knobs = resolve_knobs("quick", overrides={"gpus": 0.5, "gpus_per_env_runner": 0.25,
                                              "num_env_runners": 2})
    config = build_ppo_config(knobs)
    assert config.num_gpus_per_learner == 0.5 and config.num_learners == 0
    assert config.num_gpus_per_env_runner == 0.25 and config.num_env_runners == 2
    assert config.env_config["device"] == "cuda"


def test_probe_env_gets_its_own_episode_length_and_no_env_kwargs():
    config = build_ppo_config(resolve_knobs("quick", overrides={"env": "esper/Probe3-v0"}))
    assert config.env == "envs:esper/Probe3-v0" and config.env_config == {}
    assert config.train_batch_size_per_learner == 4 * 2
    assert config.model_config["max_seq_len"] == 3


def test_search_space_in_model_config_is_not_overridden_by_the_spec():
    grid = {"grid_search": [1.0, 0.01]}
    config = build_ppo_config(resolve_knobs("quick", overrides={"value_head_gain": grid}))
    spec = config.get_rl_module_spec(spaces={"default_policy": (observation_space(3),
                                                                action_space(3))})
    assert spec.model_config["value_head_gain"] == grid


@pytest.mark.parametrize(("preset", "total"), [("seed_before", 3_624_802),
                                               ("seed_after", 3_666_530)])
def test_presets_give_the_reference_parameter_counts(preset, total):
    # `standard` keeps the reference network sizes.
    config = build_ppo_config(resolve_knobs("standard", preset))
    spec = config.get_rl_module_spec(spaces={"default_policy": (observation_space(3),
                                                                action_space(3))})
    module = spec.build()
    assert sum(p.numel() for p in module.parameters()) == total


def test_an_env_knob_takes_its_bounds_from_the_env():
    # The knob once accepted 0, which the env refuses: the bound is now the env's own.
    with pytest.raises(ConfigError, match="inject_nan_at_epoch=0: not allowed; allowed: int >= 1"):
        resolve_knobs("quick", overrides={"inject_nan_at_epoch": 0})
    assert parse_set(["inject_nan_at_epoch=1"]) == {"inject_nan_at_epoch": 1}


def test_a_bad_loss_knob_is_one_line_below_the_knob_table_too():
    from esper_rllib.ppo.learner_config import resolve_learner_config

    with pytest.raises(ConfigError, match=r"learner_config_dict\['critic_steps'\]=-1: not "
                                          r"allowed; allowed: int >= 0"):
        resolve_learner_config({"critic_steps": -1})


def test_a_preset_that_sets_an_unknown_knob_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    from esper_rllib.cli import main
    from esper_rllib.run import profiles

    monkeypatch.setitem(profiles.PRESETS, "broken", {"value_head_depht": 3})
    with pytest.raises(ConfigError, match="preset broken: unknown key 'value_head_depht'; did "
                                          "you mean 'value_head_depth'"):
        resolve_knobs("quick", "broken")
    assert main(["train", "--preset", "broken", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "preset broken: unknown key" in err, err
    assert not (tmp_path / "runs").exists()


def test_env_knobs_default_to_the_envs_own_table_and_profiles_name_their_reward():
    from envs.config import DEFAULTS, parse_env_kwargs
    from esper_rllib.knob import ENV

    env_knobs = {k.key or n: k for n, k in KNOBS.items() if k.where == ENV}
    assert {key: k.default for key, k in env_knobs.items()} == {
        key: DEFAULTS[key] for key in env_knobs}
    # The env without kwargs runs the reference's reward; every profile names the one it runs,
    # so that a run's reward is written where its size is, not in a second default table.
    assert DEFAULTS["reward"] == "shaped" == parse_env_kwargs({}).reward.mode
    for profile, values in PROFILES.items():
        assert values["reward"] == "aligned" == resolve_knobs(profile)["reward"], profile
    # A knob given explicitly still wins over the profile's.
    assert resolve_knobs("quick", overrides={"reward": "shaped"})["reward"] == "shaped"


def test_one_sequence_length_rule_for_builder_module_and_offline_module():
    from esper_rllib.model.model_config import (
        REFERENCE_MAX_SEQ_LEN,
        resolve_model_config,
        sequence_length,
    )
    from esper_rllib.run.config import module_spec

    assert sequence_length(None, 40) == 41 and sequence_length(7, 40) == 7
    assert sequence_length(None) == REFERENCE_MAX_SEQ_LEN == resolve_model_config({})[
        "max_seq_len"]
    for overrides, expected in (({}, 41), ({"env": "esper/Probe3-v0"}, 3),
                                ({"max_seq_len": 50}, 50)):
        knobs = resolve_knobs("quick", overrides=overrides)
        spec = module_spec(knobs, observation_space(3), action_space(3))
        assert build_ppo_config(knobs).model_config["max_seq_len"] == expected
        assert spec.model_config["max_seq_len"] == expected
        assert spec.build().model_config["max_seq_len"] == expected


def test_sections_and_the_offline_module_are_what_the_builder_gives_rllib():
    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID

    from esper_rllib.run.config import Optimiser, module_spec, sections

    knobs = resolve_knobs("quick", "critic_fix", {"lr": 3e-4, "max_grad_norm": 0.5,
                                                  "critic_lr_scale": 2.0})
    config, run = build_ppo_config(knobs), sections(knobs)
    assert run.optimiser == Optimiser(lr=3e-4, grad_clip=0.5)
    assert (config.lr, config.grad_clip) == (run.optimiser.lr, run.optimiser.grad_clip)
    assert config.learner_config_dict == run.learner and run.learner["critic_lr_scale"] == 2.0
    # The module critic-fit and record build without a PPOConfig is the one PPO trains.
    torch.manual_seed(3)
    online = config.get_rl_module_spec(
        spaces={DEFAULT_MODULE_ID: (observation_space(3), action_space(3))}).build()
    torch.manual_seed(3)
    offline = module_spec(knobs, observation_space(3), action_space(3)).build()
    assert online.model_config == offline.model_config
    a, b = online.state_dict(), offline.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
