"""One check for a lent GPU machine: throughput, engine agreement, trials per hour and the end-to-end job.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out /tmp/gpu_check --data .data/cifar10.npz   # < 9 min
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check_smoke       # every part on the CPU, toy sizes
    python -m benchmarks.gpu_check ...                                      # the same, from the checkout's root

Four parts, one module each, each with its own time limit (``--<part>-limit SECONDS``; ``plan.LIMITS``, 500 s
together): ``throughput`` (seconds per epoch, stock fit against the fast engine), ``agreement`` (test accuracy of
the two engines, within 1.5 points?), ``jobs`` (trials per hour with ``--jobs`` 1, 2, 4) and ``e2e`` (the
end-to-end job's wall time against its 8-minute target). Each part module has ``run(ctx, deadline) -> dict`` and
``markdown(result) -> lines``; ``runner.PARTS`` lists them. The sizes of every part are in ``plan.py``.

The product is driven only through its command line (``python -m cifar_tune``) and ``benchmarks/throughput.py``,
as subprocesses in ``OUT/work`` (see ``common.py``), with this checkout first on ``PYTHONPATH``,
``KERAS_BACKEND=jax`` unless set, and each command's output in ``OUT/logs/``. The parts read what the commands
stored, never their standard output: the Optuna study in the SQLite file (``stored.py``), throughput.py's JSON,
baseline's ``metrics.csv``. A part that runs out of time or whose command fails is recorded as ``"not reached"``
with the reason (the timeout, or the command's last stderr line), with whatever it measured before; the later
parts still run. ``OUT/results.json`` and ``OUT/results.md`` are always written (``report.py``), and the exit
status is 0 unless this check's own arguments are bad (then 2) or the user pressed Ctrl-C (130). ``--parts`` runs
a subset (the others are recorded as not reached); ``--no-preallocate`` sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
for every product command (see benchmarks/gpu_check.md).

``--smoke`` runs every part on the CPU at toy sizes on its own synthetic .npz (300 train / 100 test images with a
learnable class stripe): ``mlp_l2`` at batch 32 for throughput and agreement (1 epoch, seed 0), ``--jobs`` 1 and 2
on ``mlp_l2``, and a two-trial ``mlp_l2`` study with ``compare --seeds 1``; the four parts at once (see
``runner.run_parts``). That is ten product commands, each of which imports TensorFlow (about 7 CPU-seconds), so
two cores cannot do it much faster: 53 s on an idle 2-core Xeon. Its backend, unless ``KERAS_BACKEND`` says
otherwise, is TensorFlow where installed (faster here, see ``machine.smoke_backend``), else JAX. With JAX it hides
an installed TensorFlow from the subprocesses, as on the GPU machine (which has none): otherwise
``keras.utils.set_random_seed`` imports TensorFlow in every process just to seed it, several seconds each.
"""

from .common import NOT_REACHED, OK, CommandResult, Context, run_commands, run_one
from .plan import GPU_PLAN, LIMITS, PART_NAMES, SMOKE_LIMITS, SMOKE_PLAN, Plan
from .runner import PARTS, main

__all__ = ["GPU_PLAN", "LIMITS", "NOT_REACHED", "OK", "PARTS", "PART_NAMES", "SMOKE_LIMITS", "SMOKE_PLAN",
           "CommandResult", "Context", "Plan", "main", "run_commands", "run_one"]
