"""GPU placement without a GPU: a local Ray with 2 logical GPUs, trials that ask for GPU bundles
(placed by the algorithm's own resource request) while their torch stays on CPU."""

from __future__ import annotations

import itertools

import pytest
import ray

from esper_rllib.run.config import build_ppo_config, resolve_knobs
from tests.helpers.tiny_sweep import TINY
from tuning.plan import gpu_knobs, plan_sweep
from tuning.results import read_ablation_csv, read_results, trial_dirs
from tuning.runner import run_sweep
from tuning.trainable import PLACEMENT_KEY, placement, trial_params


@pytest.fixture
def two_gpu_ray():
    if ray.is_initialized():
        ray.shutdown()
    # More CPUs than 2 trials need: only the GPUs can limit how many run at once.
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_gpu_knobs_split_a_trial_share_between_learner_and_env_runners():
    assert gpu_knobs({"num_env_runners": 0}, 0.5) == {"gpus": 0.5, "gpus_per_env_runner": 0.0}
    assert gpu_knobs({"num_env_runners": 3}, 1.0) == {"gpus": 0.25, "gpus_per_env_runner": 0.25}
    assert gpu_knobs({"num_env_runners": 3}, 0.0) == {}
    with pytest.raises(ValueError, match="gpus-per-trial"):
        gpu_knobs({}, -1.0)


def test_gpu_fractions_go_into_the_algorithms_bundles():
    knobs = resolve_knobs("quick", overrides={"num_env_runners": 2, "episodes_per_batch": 4})
    bundles = placement(build_ppo_config, {**knobs, **gpu_knobs(knobs, 0.9)}).bundles
    # The learner, in the trial (half a CPU: it learns while the env runners wait) ...
    assert bundles[0] == {"CPU": 0.5, "GPU": pytest.approx(0.3)}
    # ... and the env runners: the trial's CPUs add up to one per env runner.
    assert bundles[1:] == [{"CPU": 0.75, "GPU": pytest.approx(0.3)}] * 2


@pytest.mark.ray
def test_trials_asking_one_gpu_each_run_two_at_a_time_on_distinct_gpus(tmp_path, two_gpu_ray):
    plan = plan_sweep("value_head", "quick", resolve_knobs, seeds=2,
                      grid={"value_head_gain": [0.01], "value_head_depth": [2],
                            "value_coef": [0.5, 1.0]},
                      overrides=TINY)
    assert plan.n_trials == 4

    def one_gpu(config):
        # The trial's torch stays on CPU (gpus=0 in its knobs); Tune places it as if it
        # trained on one GPU.
        knobs = plan.cell_knobs(trial_params(config))
        return placement(build_ppo_config, {**knobs, **gpu_knobs(knobs, 1.0)})

    # Storage given as a URI (any pyarrow filesystem works the same way; file:// is local).
    outcome = run_sweep(plan, build_ppo_config, f"file://{tmp_path}", name="gpus",
                        resources=one_gpu, report=None, verbose=0)
    assert outcome.complete and not outcome.errored
    assert outcome.experiment == f"file://{tmp_path}/gpus"
    assert len(read_ablation_csv(tmp_path / "gpus" / "ablation.csv")) == 4  # uploaded

    spans, gpu_ids = [], []
    for trial in trial_dirs(tmp_path / "gpus"):
        results = read_results(trial)
        seen = {(r[PLACEMENT_KEY]["gpu_ids"], r[PLACEMENT_KEY]["cuda_visible_devices"])
                for r in results}
        assert len(seen) == 1, seen  # one GPU for the whole trial
        ((ids, visible),) = seen
        assert ids in ("0", "1") and visible == ids
        gpu_ids.append(ids)
        spans.append((results[0][PLACEMENT_KEY]["started_at"],
                      results[-1][PLACEMENT_KEY]["reported_at"]))
    assert len(spans) == 4
    assert set(gpu_ids) == {"0", "1"}

    def overlapping(t: float) -> int:
        return sum(start <= t <= end for start, end in spans)

    most = max(overlapping(t) for t in itertools.chain(*spans))
    assert most == 2, spans  # never a third trial: 2 GPUs, 1 each
    # Trials that ran at the same time had different GPUs.
    for (a, ga), (b, gb) in itertools.combinations(zip(spans, gpu_ids, strict=True), 2):
        if a[0] < b[1] and b[0] < a[1]:
            assert ga != gb
