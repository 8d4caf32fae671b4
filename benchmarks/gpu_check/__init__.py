"""One check for a lent GPU machine, as two commands: the probe and three checks, then the end-to-end job.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out /tmp/gc --data D.npz --copy-to $OUT       # < 5 min
    KERAS_BACKEND=jax python benchmarks/gpu_check.py --part e2e --out /tmp/gc --data D.npz --probe P.json
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check_smoke       # every part on the CPU, toy sizes
    python -m benchmarks.gpu_check ...                                      # the same, from the checkout's root

Five parts, one module each, each with its own time limit (``--<part>-limit SECONDS``; ``plan.LIMITS``): ``probe``
(first: one short timed run per architecture, engine and batch size, and the numerics check; 120 s), then, sized
from its measured times (``plan.size``; the rule is in ``plan.py``'s docstring), ``throughput`` (seconds per
epoch, stock fit against the fast engine, with validation accuracy and a finite-loss flag per row; 60 s),
``agreement`` (test accuracy of the two engines, within 1.5 points?; 50 s), ``jobs`` (trials per hour with
``--jobs`` 1, 2, 4; 40 s) — the first command, 270 s — and ``e2e`` (the end-to-end job at the largest size that
fits, with what it cut; 330 s), the second command (``--part e2e``, sized from the first's probe: ``--probe``,
default ``OUT/results.json``; ``--jobs N`` goes to its ``optimize`` commands). Each part module has
``run(ctx, deadline) -> dict`` and ``markdown(result) -> lines``; ``runner.PARTS`` lists them.

The product is driven only through its command line (``python -m cifar_tune``) and ``benchmarks/throughput.py``,
as subprocesses in ``OUT/work`` (see ``common.py``), with this checkout first on ``PYTHONPATH``,
``KERAS_BACKEND=jax`` unless set, and each command's output in ``OUT/logs/``. The parts read what the commands
stored, never their standard output: the Optuna study in the SQLite file (``stored.py``), throughput.py's JSON,
baseline's ``metrics.csv``, doctor's exit status. A part that runs out of time or whose command fails is recorded
as ``"not reached"`` with the reason and whatever it measured before; the later parts still run.
``OUT/results.json`` and ``OUT/results.md`` (and their copies in ``--copy-to``) are rewritten atomically when the
run starts, after the probe's sizing, after every part (and every e2e step) and on SIGTERM or Ctrl-C, so a command
killed at any moment leaves what it finished. The exit status is 0 unless this check's own arguments are bad (2),
the user pressed Ctrl-C (130) or it got SIGTERM (143). ``--no-preallocate`` sets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` for every product command (see benchmarks/gpu_check.md).

``--smoke`` runs every part, the probe first, on the CPU at toy sizes on its own synthetic .npz (300 train / 100
test images with a learnable class stripe): ``mlp_l2`` at batch 32 for the probe, throughput and agreement (1
epoch, seed 0), ``--jobs 2`` on ``mlp_l2``, and a two-trial ``mlp_l2`` study with ``compare --seeds 1``; the
four parts after the probe at once (see ``runner.run_stage``). That is ten product commands, each of which
imports Keras and its backend (several CPU-seconds), so two cores cannot do it much faster. Its backend, unless
``KERAS_BACKEND`` says otherwise, is TensorFlow where installed (faster here, see ``machine.smoke_backend``), else
JAX. With JAX it hides an installed TensorFlow from the subprocesses, as on the GPU machine (which has none):
otherwise ``keras.utils.set_random_seed`` imports TensorFlow in every process just to seed it, several seconds each.
"""

from .common import NOT_REACHED, OK, CommandResult, Context, run_commands, run_one
from .plan import (
                   FIRST_PARTS,
                   GPU_LADDERS,
                   GPU_PLAN,
                   LIMITS,
                   PART_NAMES,
                   SAFETY,
                   SMOKE_LIMITS,
                   SMOKE_PLAN,
                   Plan,
                   Times,
                   size,
)
from .runner import PARTS, main

__all__ = ["FIRST_PARTS", "GPU_LADDERS", "GPU_PLAN", "LIMITS", "NOT_REACHED", "OK", "PARTS", "PART_NAMES", "SAFETY",
           "SMOKE_LIMITS", "SMOKE_PLAN", "CommandResult", "Context", "Plan", "Times", "main", "run_commands",
           "run_one", "size"]
