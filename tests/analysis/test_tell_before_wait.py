"""Long steps say what they do and their estimate before they start (evaluate, its oracle
search, signal, the report's reference episodes and evaluations, the report's signal hint), and
an evaluation says what it can tell: one verdict line first, too few episodes named as such,
oracle_hold explained where it equals oracle."""

from __future__ import annotations

import math
import re

import pytest
from scipy.stats import t

from esper_rllib.analysis.evaluation import episodes_to_tell, verdict_lines
from esper_rllib.cli import main
from tests.helpers import DATA

# A one-iteration run of a 4-epoch env (tests/offline/test_checkpoint_ev.py): seconds to play.
CHECKPOINT = DATA / "checkpoint"
TINY = ["--set", "n_train=256", "--set", "n_val=128", "--set", "max_epochs=4"]
ANNOUNCED = re.compile(r": ([\d,]+) env steps, about \d+ (s|min)|\(([\d,]+) env steps, about ")


def _before_progress(err: str) -> list[str]:
    """stderr's lines before the first progress bar."""
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("["))
    return lines[:first]


def test_evaluate_says_its_search_and_its_episodes_with_their_time_first(tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("ESPER_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["evaluate", str(CHECKPOINT), "--episodes", "2", "--out",
                 str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    search, episodes = _before_progress(err)
    # 3 slots x 7 blueprints x 2 search episodes x 4 epochs; then 2 episodes of the trained
    # policy and of each of the 5 scripted ones.
    assert search.startswith("oracle search first: 21 blueprint@slot candidates x 2 episodes "
                             "(168 env steps, about ")
    assert episodes.startswith(f"evaluation of {CHECKPOINT}: 2 held-out episodes of its policy "
                               "and the 5 scripted ones: 48 env steps, about ")
    assert "s per step, timed here" in episodes
    # The verdict first on stdout, then the tables; this tiny env's policies all end alike.
    lines = out.splitlines()
    assert lines[0].startswith("verdict: cannot tell from WAIT: +0.00 accuracy points")
    assert any(line.startswith("oracle_hold = oracle here") for line in lines[:3])
    assert lines.index("## Policies") > 3
    md = (tmp_path / "out" / "evaluation.md").read_text().splitlines()
    assert md[0].startswith("# Evaluation") and md[2].startswith("verdict: ")


def test_signal_says_its_size_and_time_before_it_starts(tmp_path, capsys):
    assert main(["signal", *TINY, "--seeds", "2", "--ev-states", "2", "--ev-continuations",
                 "2", "--oracle", "bottleneck@r0c1", "--out", str(tmp_path)]) == 0
    (line,) = _before_progress(capsys.readouterr().err)
    # 4 epochs x (5 policies x 2 episodes + 2 states x 1 continuation per stream).
    assert line.startswith("audit: 5 policies x 2 episodes and the EV ceiling's 2 states x 1 "
                           "continuations per stream: 48 env steps, about ")


def test_the_report_says_each_step_before_it_starts(tmp_path, capsys):
    from esper_rllib.analysis.render import write_report
    from tests.analysis.test_report import fake_sweep

    root = fake_sweep(tmp_path / "value_head-quick", seeds=1,
                      overrides={"n_train": 256, "n_val": 128, "max_epochs": 4})
    write_report(root, reference_episodes=1, reps=50, evaluate_episodes=0)
    head, reference = capsys.readouterr().err.splitlines()[:2]
    assert head == f"report: 8 trials in {root}: statistics and plots (seconds), reference " \
        "episodes"
    assert reference.startswith("report: reference episodes, heuristic and WAIT-only, 1 each "
                                "on the sweep's env: 8 env steps, about ")
    # No signal.json: the hint that measures one says what it costs.
    report = (root / "report.md").read_text()
    steps = 4 * (5 * 6 + 240 * 3) + 21 * 2 * 4
    assert f"({steps:,} env steps with its oracle search: about " in report


def _result(trained: list[float], wait: list[float], hold_equal: bool = True) -> dict:
    from esper_rllib.analysis import learnability as lb

    def policy(accs: list[float], returns: list[float] | None = None) -> dict:
        returns = returns or [0.0] * len(accs)
        return {"vs_wait": {"final_acc": lb.paired(accs, wait)},
                "episodes": [{"seed": i, "final_acc": a, "return": r}
                             for i, (a, r) in enumerate(zip(accs, returns, strict=True))]}

    oracle = [w + 10 for w in wait]
    return {"policies": {"trained": policy(trained), "wait": policy(wait),
                         "heuristic": policy([w + 3 for w in wait]), "oracle": policy(oracle),
                         "oracle_hold": policy(oracle if hold_equal else [o - 1 for o in oracle])}}


def test_two_episodes_that_cannot_tell_say_how_many_would():
    lines = verdict_lines(_result(trained=[64.0, 54.5], wait=[55.0, 54.0]))
    assert lines[0] == ("verdict: cannot tell from WAIT: +4.75 accuracy points over WAIT "
                        "[-49.25, +58.75] on 2 paired episodes (heuristic +3.00, oracle +10.00); "
                        "the interval includes 0")
    needed = int(re.search(r"from about (\d+) episodes on \(--episodes \1\)", lines[1])[1])
    assert lines[1].startswith("2 episodes are too few: at this spread (sd 6.01 points")
    # At that spread a difference of 4.75 does exclude 0 from `needed` episodes on.
    sd = (9.0 - 0.5) / math.sqrt(2)  # the two paired differences 9 and 0.5
    def half_width(n: int) -> float:
        return t.ppf(0.975, n - 1) * sd / math.sqrt(n)

    assert half_width(needed) < 4.75 <= half_width(needed - 1), "the fewest that tell"
    assert episodes_to_tell(4.75, sd) == needed and needed > 2


def test_a_clear_difference_is_one_verdict_line():
    wait = [50.0 + i % 3 for i in range(32)]
    lines = verdict_lines(_result(trained=[w + 5 + (i % 2) for i, w in enumerate(wait)],
                                  wait=wait, hold_equal=False))
    assert lines == ["verdict: better than WAIT: +5.50 accuracy points over WAIT [+5.32, +5.68] "
                     "on 32 paired episodes (heuristic +3.00, oracle +10.00)"]


@pytest.mark.parametrize("equal", [True, False])
def test_oracle_hold_is_explained_where_it_equals_oracle(equal):
    lines = verdict_lines(_result(trained=[60.0, 61.0, 62.0], wait=[50.0, 50.5, 51.0],
                                  hold_equal=equal))
    assert any(line.startswith("oracle_hold = oracle here: its seed (the oracle's blueprint "
                               "and slot) is kept in HOLDING") for line in lines) is equal
