"""Every part's sizes and time limits, and the sizing rule that picks the sizes from the probe's measured times.

The rule. The probe (``probe.py``) times, per architecture, engine (keras, fast) and batch size (32, 512), a
first epoch (compile included) and a second one (steady state) on a few thousand images. ``Times`` turns those
into estimates: an epoch of ``n`` images (validation included) takes ``n × second / probe images``; building a
model costs ``first − second`` (its compile); every process costs ``startup`` seconds (the probe command's own
start-up: its wall time less everything it timed, at least 5 s). A combination the probe did not reach counts as
the slowest it did reach with the same engine and batch, else the slowest of all (pessimistic), and without any
probe result ``DEFAULT_TIMES`` (pessimistic guesses) apply. Each later part has a ladder of sizes, the largest
first (``GPU_LADDERS``): fewer images, epochs, seeds, trials, ``--jobs`` counts and architectures further down.
``size()`` takes, per part, the first rung whose estimate is at most ``SAFETY`` (0.7) of the part's time limit,
else the last rung (recorded as not fitting: the part's own deadline still ends it, with what it measured).
The time the probe leaves of its own limit goes to the later parts of its command first (``stretch``), in
proportion to their limits (not to those given on the command line).
The estimates (``ESTIMATES``) count every process's start-up, every model's compile and every epoch; the
product's studies and ``compare`` at batch 32 (the slowest; the search space can draw it) with the study engine
(``fast`` on the GPU), no pruning credit; runs that share the one GPU (agreement's parallel runs, ``--jobs N``)
at most ``PARALLEL_GAIN`` (2) times faster together than one after another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

PART_NAMES = ("probe", "throughput", "agreement", "jobs", "e2e")
FIRST_PARTS = ("probe", "throughput", "agreement", "jobs")  # the first command; e2e is the second (--part e2e)
# Seconds per part on the GPU. The first command's four parts: 270 s, within 5 minutes with the install of the
# carried wheels and the data's decoding (about 30 s); the e2e command: 330 s, within 6 minutes likewise.
LIMITS = {"probe": 120, "throughput": 60, "agreement": 50, "jobs": 40, "e2e": 330}
SMOKE_LIMITS = {name: 240 for name in PART_NAMES}  # generous: a shared, busy CPU
ALL_ARCHS = ("mlp_bn", "mlp_l2", "cnn", "cnn_da", "resnet")
HEAVIEST_FIRST = ("resnet", "cnn_da", "cnn", "mlp_bn", "mlp_l2")  # cut short, the light MLPs are the ones missing
SAFETY = 0.7
PARALLEL_GAIN = 2.0
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000


@dataclass(frozen=True)
class Plan:
    """The sizes of every part: the GPU run's (sized from the probe), or the smoke run's."""

    probe_archs: tuple[str, ...]
    probe_images: int
    probe_val: int
    probe_batches: tuple[int, ...]
    throughput_archs: tuple[str, ...]
    throughput_images: int
    throughput_val: int | None  # None: throughput.py's own (images / 50)
    throughput_batches: tuple[int, ...]
    throughput_bf16: bool
    agreement_archs: tuple[str, ...]
    agreement_epochs: int
    agreement_seeds: tuple[int, ...]
    agreement_subset: int | None  # None: all 50,000 training and 10,000 test images
    jobs_arch: str
    jobs_counts: tuple[int, ...]
    jobs_trials: int
    jobs_epochs: int
    jobs_subset: int
    e2e_archs: tuple[str, ...]
    e2e_trials: int
    e2e_epochs: int
    e2e_subset: int | None  # None: the full split (45,000 training / 5,000 validation)
    e2e_val_size: int | None
    e2e_seeds: int
    e2e_jobs: int = 1
    study_engine: str = "fast"  # what --engine auto picks for optimize and compare: fast on a GPU, keras on a CPU

    def sizes(self, part: str) -> dict:
        """This part's sizes (the plan's fields named ``<part>_...``), for results.json."""
        return {k[len(part) + 1:]: v for k, v in asdict(self).items() if k.startswith(part + "_")}


GPU_PLAN = Plan(  # the largest rung of every ladder
    probe_archs=HEAVIEST_FIRST, probe_images=5_000, probe_val=1_000, probe_batches=(32, 512),
    throughput_archs=HEAVIEST_FIRST, throughput_images=50_000, throughput_val=None, throughput_batches=(32, 512),
    throughput_bf16=True,
    agreement_archs=("cnn", "resnet"), agreement_epochs=5, agreement_seeds=(0, 1), agreement_subset=None,
    jobs_arch="cnn", jobs_counts=(1, 2, 4), jobs_trials=8, jobs_epochs=2, jobs_subset=10_000,
    e2e_archs=ALL_ARCHS, e2e_trials=4, e2e_epochs=10, e2e_subset=None, e2e_val_size=None, e2e_seeds=3,
)
SMOKE_PLAN = Plan(  # one architecture, one seed: what keeps every code path of the check running, no more
    probe_archs=("mlp_l2",), probe_images=300, probe_val=100, probe_batches=(32,),
    throughput_archs=("mlp_l2",), throughput_images=300, throughput_val=100, throughput_batches=(32,),
    throughput_bf16=False,
    agreement_archs=("mlp_l2",), agreement_epochs=1, agreement_seeds=(0,), agreement_subset=None,
    # --jobs 2 alone: the workers' path (e2e's optimize runs --jobs 1); the two one after another were the
    # smoke's longest path
    jobs_arch="mlp_l2", jobs_counts=(2,), jobs_trials=2, jobs_epochs=1, jobs_subset=200,
    e2e_archs=("mlp_l2",), e2e_trials=2, e2e_epochs=1, e2e_subset=None, e2e_val_size=50, e2e_seeds=1,
    study_engine="keras",
)

_TWO = ("cnn_da", "resnet")
GPU_LADDERS: dict[str, list[dict]] = {  # per part, overrides of GPU_PLAN, the largest first
    # below 10,000 images only batch 512 in float32 and bf16: the probe has timed batch 32 and 512 in float32
    "throughput": [{"throughput_images": n} for n in (50_000, 25_000, 10_000)] + [
        {"throughput_images": n, "throughput_batches": (512,), "throughput_archs": a}
        for n, a in ((10_000, HEAVIEST_FIRST), (5_000, HEAVIEST_FIRST), (5_000, ("resnet", "cnn_da", "cnn")),
                     (5_000, ("resnet",)))],
    "agreement": [{"agreement_epochs": e, "agreement_subset": s, "agreement_seeds": seeds, "agreement_archs": a}
                  for e, s, seeds, a in ((5, None, (0, 1), ("cnn", "resnet")), (3, None, (0, 1), ("cnn", "resnet")),
                                         (3, 20_000, (0, 1), ("cnn", "resnet")), (2, 10_000, (0, 1), ("cnn", "resnet")),
                                         (2, 10_000, (0,), ("cnn", "resnet")), (1, 10_000, (0,), ("cnn",)))],
    "jobs": [{"jobs_trials": t, "jobs_epochs": e, "jobs_subset": s, "jobs_counts": c}
             for t, e, s, c in ((8, 2, 10_000, (1, 2, 4)), (8, 1, 10_000, (1, 2, 4)), (4, 1, 10_000, (1, 2, 4)),
                                (4, 1, 5_000, (1, 2, 4)), (4, 1, 5_000, (1, 2)), (2, 1, 5_000, (1, 2)))],
    "e2e": [{"e2e_archs": a, "e2e_trials": t, "e2e_seeds": s, "e2e_subset": sub, "e2e_val_size": sub and sub // 10}
            for a, t, s, sub in ((ALL_ARCHS, 4, 3, None), (ALL_ARCHS, 2, 3, None), (_TWO, 4, 3, None),
                                 (_TWO, 2, 3, None), (_TWO, 2, 1, None), (_TWO, 1, 1, None), (("resnet",), 1, 1, None),
                                 (_TWO, 2, 1, 10_000), (("resnet",), 1, 1, 10_000))],
}
SMOKE_LADDERS: dict[str, list[dict]] = {part: [{}] for part in PART_NAMES[1:]}  # the toy sizes, estimated alike


@dataclass(frozen=True)
class Times:
    """Measured seconds: ``rows[(arch, engine, batch)] = (compile s, s per image)``, and a process's start-up."""

    rows: dict[tuple[str, str, int], tuple[float, float]]
    startup: float
    source: str

    @classmethod
    def from_probe(cls, probe: dict | None) -> Times:
        """From the probe part's result (``probe.run``); ``DEFAULT_TIMES`` when it measured nothing."""
        rows = {}
        for r in (probe or {}).get("rows", []):
            second, first = r.get("second_epoch_seconds"), r.get("first_epoch_seconds")
            if isinstance(second, (int, float)) and isinstance(first, (int, float)) and second > 0:
                per_image = second / (probe["images"] + probe.get("val_images", 0))
                rows[(r["arch"], r["engine"], int(r["batch"]))] = (max(0.0, first - second), per_image)
        if not rows:
            return DEFAULT_TIMES
        return cls(rows, max(5.0, float((probe or {}).get("startup_seconds") or 5.0)), "probe")

    def _lookup(self, arch: str, engine: str, batch: int) -> tuple[float, float]:
        if (arch, engine, batch) in self.rows:
            return self.rows[(arch, engine, batch)]
        same = [v for (a, e, b), v in self.rows.items() if e == engine and b == batch] or list(self.rows.values())
        return max(c for c, _ in same), max(p for _, p in same)

    def compile(self, arch: str, engine: str, batch: int = 32) -> float:
        return self._lookup(arch, engine, batch)[0]

    def epoch(self, arch: str, engine: str, batch: int, images: int) -> float:
        return self._lookup(arch, engine, batch)[1] * images


# No probe: an epoch of 50,000 images in 15 s, 20 s of compile per model, 20 s of start-up per process.
DEFAULT_TIMES = Times({("*", e, b): (20.0, 15.0 / CIFAR_TRAIN) for e in ("keras", "fast") for b in (32, 512)},
                      20.0, "default (no probe results)")


def estimate_throughput(p: Plan, t: Times, parallel: int) -> float:
    """throughput.py: per arch, setting and engine, one compile and a warm-up and a timed epoch."""
    n = p.throughput_images + (p.throughput_val or max(100, p.throughput_images // 50))
    settings = [*p.throughput_batches, *([max(p.throughput_batches)] if p.throughput_bf16 else [])]
    return t.startup + sum(t.compile(a, e, b) + 2 * t.epoch(a, e, b, n)
                           for a in p.throughput_archs for b in settings for e in ("keras", "fast"))


def estimate_agreement(p: Plan, t: Times, parallel: int) -> float:
    """baseline runs (seeds × engines), each all archs at batch 32; up to ``parallel`` at a time."""
    train = p.agreement_subset or CIFAR_TRAIN
    n = train + (train // 5 if p.agreement_subset else CIFAR_TEST)
    runs = [t.startup + sum(t.compile(a, e) + p.agreement_epochs * t.epoch(a, e, 32, n) for a in p.agreement_archs)
            for _ in p.agreement_seeds for e in ("keras", "fast")]
    return max(max(runs), sum(runs) / min(PARALLEL_GAIN, parallel))


def _trials(t: Times, engine: str, arch: str, trials: int, epochs: int, images: int, jobs: int) -> float:
    per_trial = t.compile(arch, engine) + epochs * t.epoch(arch, engine, 32, images)
    return t.startup * (2 if jobs > 1 else 1) + trials * per_trial / min(PARALLEL_GAIN, jobs)


def estimate_jobs(p: Plan, t: Times, parallel: int) -> float:
    """One study of ``jobs_trials`` per ``--jobs`` count, one after another."""
    return sum(_trials(t, p.study_engine, p.jobs_arch, p.jobs_trials, p.jobs_epochs, p.jobs_subset, j)
               for j in p.jobs_counts)


def estimate_e2e(p: Plan, t: Times, parallel: int) -> float:
    """A study per arch (``e2e_trials`` of ``e2e_epochs``), then compare: seeds × archs retrainings."""
    images = p.e2e_subset or CIFAR_TRAIN
    studies = sum(_trials(t, p.study_engine, a, p.e2e_trials, p.e2e_epochs, images, p.e2e_jobs) for a in p.e2e_archs)
    compare = t.startup + p.e2e_seeds * sum(t.compile(a, p.study_engine) + p.e2e_epochs
                                            * t.epoch(a, p.study_engine, 32, images) for a in p.e2e_archs)
    return studies + compare


ESTIMATES = {"throughput": estimate_throughput, "agreement": estimate_agreement, "jobs": estimate_jobs,
             "e2e": estimate_e2e}


def size(base: Plan, ladders: dict[str, list[dict]], times: Times, limits: dict[str, float], *,
         parallel: int = 4, e2e_jobs: int = 1) -> tuple[Plan, dict]:
    """The plan whose every part takes the first rung of its ladder that fits ``SAFETY × limit`` seconds, and
    the record of the choice per part: ``rung`` (0 = the largest) of ``rungs``, ``estimate_seconds``,
    ``budget_seconds``, ``fits``, ``sizes`` (and for e2e ``cut``: what the full job has that this one lacks)."""
    plan = replace(base, e2e_jobs=e2e_jobs)
    record: dict = {"times_source": times.source, "safety": SAFETY, "startup_seconds": times.startup, "parts": {}}
    for part, ladder in ladders.items():
        budget = SAFETY * limits[part]
        for i, rung in enumerate(ladder):
            candidate = replace(plan, **rung)
            estimate = ESTIMATES[part](candidate, times, parallel)
            if estimate <= budget or i == len(ladder) - 1:
                break
        plan = candidate
        record["parts"][part] = {"rung": i, "rungs": len(ladder), "estimate_seconds": round(estimate, 1),
                                 "budget_seconds": budget, "fits": estimate <= budget, "sizes": plan.sizes(part)}
    if "e2e" in record["parts"]:
        record["parts"]["e2e"]["cut"] = e2e_cut(plan, base)
    return plan, record


def stretch(limits: dict[str, float], parts: list[str], spare: float) -> dict[str, float]:
    """The limits with ``spare`` seconds (what the probe left of its limit) shared among ``parts`` in proportion
    to their limits: the first command's later parts get the time the probe did not use."""
    total = sum(limits[p] for p in parts)
    if spare <= 0 or total <= 0:
        return dict(limits)
    return {n: v + spare * v / total if n in parts else v for n, v in limits.items()}


def e2e_cut(plan: Plan, full: Plan) -> list[str]:
    """What the full end-to-end job (``full``'s e2e sizes) has that ``plan``'s lacks, in words."""
    cut = []
    if dropped := [a for a in full.e2e_archs if a not in plan.e2e_archs]:
        cut.append("archs " + ", ".join(dropped))
    for field, words in (("trials", "trials per study"), ("seeds", "compare seeds"), ("epochs", "epochs")):
        if getattr(plan, f"e2e_{field}") < getattr(full, f"e2e_{field}"):
            cut.append(f"{words} {getattr(full, f'e2e_{field}')} -> {getattr(plan, f'e2e_{field}')}")
    if plan.e2e_subset and not full.e2e_subset:
        cut.append(f"full split -> subset of {plan.e2e_subset:,} images")
    return cut
