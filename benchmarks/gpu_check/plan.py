"""The sizes of every part and their time limits: the GPU run's, and the smoke run's (toy sizes on the CPU)."""

from __future__ import annotations

from dataclasses import dataclass

PART_NAMES = ("throughput", "agreement", "jobs", "e2e")
# Seconds per part on the GPU: 500 s together, which leaves room for the set-up inside 9 minutes.
LIMITS = {"throughput": 130, "agreement": 70, "jobs": 80, "e2e": 220}
SMOKE_LIMITS = {"throughput": 240, "agreement": 240, "jobs": 240, "e2e": 240}  # generous: a shared, busy CPU
ALL_ARCHS = ("mlp_bn", "mlp_l2", "cnn", "cnn_da", "resnet")


@dataclass(frozen=True)
class Plan:
    """The sizes of every part: the GPU run's, or the smoke run's."""

    throughput_archs: tuple[str, ...]
    throughput_args: tuple[str, ...]  # --images, --epochs, --batches, --bf16 ... for benchmarks/throughput.py
    agreement_archs: tuple[str, ...]
    agreement_epochs: int
    agreement_seeds: tuple[int, ...]
    jobs_arch: str
    jobs_counts: tuple[int, ...]
    jobs_trials: int
    jobs_epochs: int
    jobs_args: tuple[str, ...]  # --subset, --val-size
    e2e_archs: tuple[str, ...]
    e2e_trials: int
    e2e_optimize_args: tuple[str, ...]  # extra optimize options (the GPU run: none, the default preset)
    e2e_seeds: int


GPU_PLAN = Plan(
    # heaviest first: if the part runs out of time, the light MLPs are the ones missing
    throughput_archs=("resnet", "cnn", "cnn_da", "mlp_bn", "mlp_l2"),
    throughput_args=("--images", "50000", "--epochs", "1", "--batches", "32,512", "--bf16"),
    agreement_archs=("cnn", "resnet"), agreement_epochs=5, agreement_seeds=(0, 1),
    jobs_arch="cnn", jobs_counts=(1, 2, 4), jobs_trials=8, jobs_epochs=2,
    jobs_args=("--subset", "10000", "--val-size", "1000"),
    e2e_archs=ALL_ARCHS, e2e_trials=20, e2e_optimize_args=(), e2e_seeds=2,
)
SMOKE_PLAN = Plan(  # one architecture, one seed: what keeps every code path of the check running, no more
    throughput_archs=("mlp_l2",),
    throughput_args=("--images", "300", "--val", "100", "--epochs", "1", "--batches", "32", "--no-bf16"),
    agreement_archs=("mlp_l2",), agreement_epochs=1, agreement_seeds=(0,),
    jobs_arch="mlp_l2", jobs_counts=(1, 2), jobs_trials=2, jobs_epochs=1,
    jobs_args=("--subset", "200", "--val-size", "50"),
    e2e_archs=("mlp_l2",), e2e_trials=2, e2e_optimize_args=("--epochs", "1", "--val-size", "50"), e2e_seeds=1,
)
