"""The collapse monitor's flags and verdict on synthetic metric histories."""

import json
import math

import pytest

from esper_rllib.ppo.collapse import UNDETERMINED, CollapseMonitor
from esper_rllib.ppo.metric_names import COLLAPSE_FLAGS, MONITOR_METRICS, VERDICTS

HEALTHY = {"value_loss": 1.0, "explained_variance": 0.5, "q_spread": 0.1, "return_std": 1.0,
           "clip_ratio": 2.0, "kl": 0.02}


def feed(monitor, evs, **overrides):
    return [monitor.update({**HEALTHY, "explained_variance": ev, **overrides}) for ev in evs]


def test_record_carries_every_monitor_metric():
    record = CollapseMonitor().update(HEALTHY)
    assert set(MONITOR_METRICS) <= set(record)
    assert all(isinstance(record[f"flag_{f}"], bool) for f in COLLAPSE_FLAGS)


def test_seed_document_broken_run_raises_every_flag():
    # Batch 1 of the broken run: value loss 87.24, clip 72.8x, KL 2e-5, Q-spread ~0.
    monitor = CollapseMonitor()
    first = monitor.update({"value_loss": 87.24, "explained_variance": -0.007, "q_spread": 0.0,
                            "return_std": 5.0, "clip_ratio": 72.8, "kl": 2e-5})
    assert first["flag_high_initial_value_loss"]
    assert first["flag_extreme_clipping"]
    assert first["flag_kl_stalled"]
    assert first["flag_q_spread_collapsed"]
    # EV < 0 only counts after iteration 5.
    assert not first["flag_ev_negative"]
    later = feed(monitor, [-0.01] * 5, value_loss=3.0)
    assert [r["flag_ev_negative"] for r in later] == [False] * 4 + [True]
    # The initial value loss flag keeps describing the first iteration.
    assert all(r["flag_high_initial_value_loss"] for r in later)


def test_healthy_metrics_raise_no_flag():
    for record in feed(CollapseMonitor(), [0.5] * 7):
        assert not any(record[f"flag_{f}"] for f in COLLAPSE_FLAGS)


def test_thresholds_are_relative_and_strict():
    monitor = CollapseMonitor()
    # q_spread threshold is 1e-3 x return_std: 0.05 is collapsed against a return std of 100.
    r = monitor.update({**HEALTHY, "q_spread": 0.05, "return_std": 100.0, "clip_ratio": 10.0})
    assert r["flag_q_spread_collapsed"]
    assert not r["flag_extreme_clipping"]  # exactly 10x is not "> 10"
    r = monitor.update({**HEALTHY, "q_spread": 0.2, "return_std": 100.0, "kl": 1e-3})
    assert not r["flag_q_spread_collapsed"]
    assert not r["flag_kl_stalled"]


def test_missing_or_nan_metrics_raise_no_flag():
    # e.g. the state-value critic has no q_spread; a constant return gives EV NaN.
    nan_metrics = {"q_spread": math.nan, "explained_variance": math.nan}
    record = CollapseMonitor(warmup=0).update(nan_metrics)
    assert not any(record[f"flag_{f}"] for f in COLLAPSE_FLAGS)
    assert record["verdict"] == UNDETERMINED and record["verdict_code"] == -1


@pytest.mark.parametrize("ev, verdict", [(-0.05, "failure"), (0.0, "weak"), (0.2, "weak"),
                                         (0.21, "strong")])
def test_verdict_thresholds(ev, verdict):
    # Warm-up 5, then a majority (3) of the 5-wide window: the first verdict at iteration 8.
    records = feed(CollapseMonitor(), [ev] * 8)
    assert [r["verdict"] for r in records[:7]] == [UNDETERMINED] * 7
    assert records[-1]["verdict"] == verdict
    assert records[-1]["verdict_code"] == VERDICTS.index(verdict)


def test_one_noisy_batch_does_not_flip_the_verdict():
    # Wherever the noisy batch falls after warm-up, it never decides the verdict alone.
    for noisy in range(5, 10):
        evs = [0.5] * 10
        evs[noisy] = -3.0
        records = feed(CollapseMonitor(window=5), evs)
        assert [r["verdict"] for r in records[7:]] == ["strong"] * 3, noisy
    # A persistent change does flip it once it dominates the window.
    records = feed(CollapseMonitor(window=5), [0.5] * 8 + [-0.1] * 3)
    assert records[-2]["verdict"] == "strong" and records[-1]["verdict"] == "failure"


def test_should_stop_after_patience_failures():
    monitor = CollapseMonitor()
    feed(monitor, [-0.5] * 9)  # failure at iterations 8 and 9
    assert monitor.should_stop(2)
    assert not monitor.should_stop(3)
    feed(monitor, [0.9] * 5)
    assert not monitor.should_stop(1)
    with pytest.raises(ValueError, match="patience"):
        monitor.should_stop(0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        CollapseMonitor(window=0)
    with pytest.raises(ValueError, match="warmup"):
        CollapseMonitor(warmup=-1)


def test_state_round_trip_keeps_history_and_verdict():
    monitor = CollapseMonitor()
    feed(monitor, [-0.5] * 8)
    state = json.loads(json.dumps(monitor.get_state()))  # JSON-able, as checkpoints store it
    restored = CollapseMonitor()
    restored.set_state(state)
    # (compared as JSON: the warm-up records' NaN trailing EV is not equal to itself)
    assert json.dumps(restored.history) == json.dumps(monitor.history)
    assert restored.should_stop(1)
    # Continuing the restored monitor gives what continuing the original gives.
    assert restored.update({**HEALTHY, "explained_variance": 0.9}) == monitor.update(
        {**HEALTHY, "explained_variance": 0.9})


def test_warmup_evs_never_enter_the_window():
    # The audit's case: five warm-up iterations at EV -1, then a healthy critic. The verdict and
    # the trailing EV come from post-warm-up iterations only.
    monitor = CollapseMonitor(window=5, warmup=5)
    records = feed(monitor, [-1.0] * 5 + [0.5] * 5)
    assert all(math.isnan(r["ev_trailing"]) for r in records[:5])
    assert "failure" not in [r["verdict"] for r in records]
    assert records[-1]["verdict"] == "strong" and records[-1]["ev_trailing"] == 0.5
    assert not monitor.should_stop(1)
    # The same after a checkpoint restore.
    restored = CollapseMonitor()
    restored.set_state(json.loads(json.dumps(monitor.get_state())))
    assert restored.update({**HEALTHY, "explained_variance": 0.5})["verdict"] == "strong"


def test_the_return_to_go_ev_has_its_own_trailing_window_and_no_say_in_the_verdict():
    monitor = CollapseMonitor(window=3, warmup=1)
    records = [monitor.update({**HEALTHY, "explained_variance": 0.5,
                               "explained_variance_return": r})
               for r in (9.0, -0.4, -0.2, 0.1, -0.3)]
    assert math.isnan(records[0]["ev_return_trailing"])  # warm-up
    assert records[2]["ev_return_trailing"] == pytest.approx(-0.3)  # median(-0.4, -0.2)
    assert records[-1]["ev_return_trailing"] == pytest.approx(-0.2)  # median(-0.2, 0.1, -0.3)
    assert records[-1]["verdict"] == "strong"  # judged on explained_variance only
    restored = CollapseMonitor()
    restored.set_state(monitor.get_state())
    step = {**HEALTHY, "explained_variance": 0.5, "explained_variance_return": 0.7}
    assert restored.update(step)["ev_return_trailing"] == monitor.update(step)[
        "ev_return_trailing"] == pytest.approx(0.1)


def test_a_checkpoint_from_before_the_return_to_go_ev_restores():
    monitor = CollapseMonitor()
    feed(monitor, [0.5] * 8)  # a verdict already: 3 post-warm-up EVs
    state = monitor.get_state()
    del state["return_evs"]  # as written before explained_variance_return was logged
    restored = CollapseMonitor()
    restored.set_state(state)
    record = restored.update({**HEALTHY, "explained_variance_return": 0.25})
    assert record["ev_return_trailing"] == 0.25 and record["verdict"] == "strong"
