"""``esper-rllib evaluate CHECKPOINT``: a trained policy on held-out env seeds next to the
audit's scripted policies (WAIT, random, heuristic, oracle), paired by seed."""

from __future__ import annotations

import argparse
from pathlib import Path

from esper_rllib.analysis.defaults import HELD_OUT_SEED
from esper_rllib.commands.signal import add_oracle_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="a checkpoint's policy on held-out env seeds next to WAIT, random, "
                         "heuristic and oracle",
        description="Play the checkpoint's policy and the scripted policies on the same "
                    "held-out env seeds (the env the run trained on); report final accuracy, "
                    "return, op mix and paired differences against WAIT with 95% intervals. "
                    "Without --oracle, the first run on an env searches the best fixed "
                    "blueprint@slot (21 candidates x --search-seeds episodes, minutes) and "
                    "caches the choice in ~/.cache/esper-rllib/oracle ($ESPER_CACHE_DIR).")
    parser.add_argument("checkpoint", help="a checkpoint_NNNNNN folder of a train or sweep run")
    parser.add_argument("--episodes", type=int, default=6, help="episodes per policy, at least "
                        "2 (default 6)")
    parser.add_argument("--greedy", action="store_true",
                        help="the most likely legal value of each head instead of sampling")
    parser.add_argument("--seeds", type=int, default=HELD_OUT_SEED, metavar="START",
                        help=f"first env seed (default {HELD_OUT_SEED}, held out from training)")
    add_oracle_arguments(parser)
    parser.add_argument("--out", help="output folder (default: the checkpoint's trial folder "
                        "/evaluation)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esper_rllib.analysis.audit import render_markdown
    from esper_rllib.analysis.evaluation import (
        EVALUATION_JSON,
        EVALUATION_MD,
        default_out,
        evaluate,
        verdict_lines,
        write_evaluation,
    )
    from tuning.storage import claim_folder

    out = Path(args.out) if args.out else default_out(args.checkpoint)
    # One evaluation writes it at a time (issue 36): a second gets one line, not a mix. No
    # checkpoint there: evaluate's own one line, and nothing created.
    folder = claim_folder(out, f"--out {out}", fresh=False) \
        if Path(args.checkpoint).is_dir() else None
    try:
        result = evaluate(args.checkpoint, episodes=args.episodes, greedy=args.greedy,
                          first_seed=args.seeds, oracle=args.oracle,
                          search_seeds=args.search_seeds)
        write_evaluation(out, result)
    finally:
        if folder is not None:
            folder.release(remove_if_empty=True)  # a refused checkpoint leaves nothing
    # What it can tell first; the tables after it.
    print("\n".join(verdict_lines(result)) + "\n")
    print(render_markdown(result))
    print(f"wrote {out / EVALUATION_MD} and {out / EVALUATION_JSON}")
    return 0
