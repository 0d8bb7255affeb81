"""train's progress line."""

from esper_rllib.run.trainer import progress_line


def test_a_restored_train_run_paces_its_eta_on_its_own_iterations():
    # Restored at iteration 16 of 32: 6 iterations in 570 s here, 10 to go at 95 s each.
    result = {"training_iteration": 22, "iterations_since_restore": 6, "time_total_s": 570.0,
              "time_since_restore": 570.0}
    assert progress_line(result, 32).endswith("| 9:30, ETA 15:50")
