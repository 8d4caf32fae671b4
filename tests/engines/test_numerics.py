"""The numerics check (engines/numerics.py): every architecture in float32 and bf16 against the CPU float32
reference on TensorFlow and on JAX's CPU backend, a planted bf16 fault reported by ``doctor --check`` in one line
(exit status 2), the cache written and reused (failures too), and JAX 0.11+'s real bf16 NaN on XLA:CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import pytest

from cifar_tune import cli
from cifar_tune.choices import ARCH_KEYS
from cifar_tune.engines import numerics
from cifar_tune.models import architectures
from tests.helpers.paths import REPO

CELLS = [(a, p, m, w) for a in ARCH_KEYS for p in ("float32", "bf16") for m in numerics.MODES for w in numerics.WHATS]


@pytest.fixture(scope="module")
def tf_cache(tmp_path_factory) -> Path:
    """The check of every architecture and precision on this session's backend (TensorFlow), run once into a
    cache folder of its own; returns the folder."""
    folder = tmp_path_factory.mktemp("numerics")
    saved = os.environ.get(numerics.DIR_ENV)
    os.environ[numerics.DIR_ENV] = str(folder)
    try:
        numerics.check()
    finally:
        os.environ.pop(numerics.DIR_ENV) if saved is None else os.environ.__setitem__(numerics.DIR_ENV, saved)
    return folder


def test_every_architecture_passes_in_float32_and_bf16_on_tensorflow(tf_cache, monkeypatch):
    monkeypatch.setenv(numerics.DIR_ENV, str(tf_cache))
    rows = numerics.check()
    assert keras.backend.backend() == "tensorflow"
    assert [(r.arch, r.precision, r.mode, r.what) for r in rows] == CELLS
    bad = [r for r in rows if not r.ok]
    assert bad == [], numerics.table(bad)
    numerics.require(rows)  # raises nothing
    # the comparison is real: bf16 differs from the float32 reference, within its tolerance
    assert all(0 < r.max_error <= r.tolerance for r in rows if r.precision == "bf16")


def test_the_cache_lives_per_user_not_in_the_working_folder(monkeypatch, tmp_path):
    """Without $CIFAR_TUNE_NUMERICS_DIR the cache is the user's (platformdirs), not ``storage/`` of the working
    folder: a study in a new folder finds the check done (issue 27 item 4)."""
    import platformdirs

    monkeypatch.delenv(numerics.DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # platformdirs' folder on Linux
    path = numerics.cache_path()
    assert path.parent == platformdirs.user_cache_path("cifar-tune") / "numerics" and path.is_absolute()
    assert not path.is_relative_to(Path.cwd() / "storage")
    monkeypatch.setenv(numerics.DIR_ENV, str(tmp_path / "mine"))  # the override still wins
    assert numerics.cache_path().parent == tmp_path / "mine"


def test_the_cache_is_written_once_and_reused(tf_cache, monkeypatch):
    monkeypatch.setenv(numerics.DIR_ENV, str(tf_cache))
    (path,) = tf_cache.glob("*.json")
    assert path == numerics.cache_path() and "tensorflow" in path.name and "keras" in path.name
    assert len(json.loads(path.read_text())) == len(ARCH_KEYS) * 2  # one entry per architecture and precision
    before = dict(numerics.COMPUTED)
    assert numerics.check(["resnet"], ["bf16"]) == [r for r in numerics.check() if r.arch == "resnet"
                                                   and r.precision == "bf16"]
    assert numerics.COMPUTED == before  # nothing measured again
    numerics.check(["mlp_l2"], ["bf16"], batch=8)  # another batch is another entry
    assert numerics.COMPUTED[("mlp_l2", "bf16")] == before.get(("mlp_l2", "bf16"), 0) + 1


class NanWhereBright(keras.layers.Layer):
    """The planted fault: in bf16 only, NaN in place of the pixels above 0.9 (scattered NaNs, as XLA:CPU's
    bf16 conv bug gives); float32 passes through untouched."""

    def call(self, x):
        if keras.backend.standardize_dtype(x.dtype) != "bfloat16":
            return x
        return keras.ops.where(x > 0.9, keras.ops.cast(float("nan"), x.dtype), x)


def broken_resnet(config: dict) -> keras.Model:
    return keras.Sequential([keras.Input(architectures.IMAGE_SHAPE), NanWhereBright(),
                             architectures.build_resnet(config)], name="resnet")


def test_doctor_check_reports_a_planted_bf16_fault_in_one_line(tf_cache, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "numerics"
    shutil.copytree(tf_cache, cache)
    (path,) = cache.glob("*.json")
    entries = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("resnet/")}
    path.write_text(json.dumps(entries))  # the four other architectures come from the cache; resnet is measured
    monkeypatch.setenv(numerics.DIR_ENV, str(cache))
    monkeypatch.setitem(architectures.ARCHITECTURES, "resnet",
                        replace(architectures.ARCHITECTURES["resnet"], builder=broken_resnet))
    before = dict(numerics.COMPUTED)
    for _attempt in range(2):  # the failure is cached, and raised every time
        assert cli.main(["doctor", "--check"]) == 2
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("cifar-tune: error: numerics check failed: resnet in bf16, eager forward: ")
        assert "non-finite values" in err and f"tensorflow {__import__('tensorflow').__version__}" in err
        assert err.strip().endswith("use --precision float32")
        table = {tuple(line.split()[:3]): line for line in out.splitlines() if line.startswith("resnet ")}
        assert len(table) == 4 and all(line.endswith("NO") for k, line in table.items() if k[1] == "bf16")
        assert all(line.endswith("yes") for k, line in table.items() if k[1] == "float32")
    assert numerics.COMPUTED[("resnet", "bf16")] == before.get(("resnet", "bf16"), 0) + 1
    assert {k: v for k, v in numerics.COMPUTED.items() if k[0] != "resnet"} == \
        {k: v for k, v in before.items() if k[0] != "resnet"}


def test_a_worker_checks_before_its_first_trial(tmp_path, monkeypatch):
    """``verify``: raises the one line for the planted fault, skipped by $CIFAR_TUNE_SKIP_NUMERICS=1."""
    monkeypatch.setenv(numerics.DIR_ENV, str(tmp_path / "numerics"))
    monkeypatch.setitem(architectures.ARCHITECTURES, "resnet",
                        replace(architectures.ARCHITECTURES["resnet"], builder=broken_resnet))
    monkeypatch.setenv(numerics.SKIP_ENV, "1")
    numerics.verify("resnet", "bf16")
    assert not (tmp_path / "numerics").exists()
    monkeypatch.delenv(numerics.SKIP_ENV)
    with pytest.raises(numerics.UserError, match=r"^numerics check failed: resnet in bf16, .*float32$"):
        numerics.verify("resnet", "bf16")


def test_optimize_stops_before_its_first_trial_on_a_faulty_device(tiny_npz, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(numerics.DIR_ENV, str(tmp_path / "numerics"))
    monkeypatch.setitem(architectures.ARCHITECTURES, "resnet",
                        replace(architectures.ARCHITECTURES["resnet"], builder=broken_resnet))
    argv = ["optimize", "--arch", "resnet", "--precision", "bf16", "--n-trials", "1", "--epochs", "1",
            "--val-size", "100", "--data", str(tiny_npz)]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("cifar-tune: error: numerics check failed: resnet in bf16") and err.count("\n") == 1
    assert "Trial" not in out and not Path("storage/cifar_tune.db").exists()  # stopped before the study


def _jax_check(python: str, script: str, timeout: int = 1500) -> dict:
    """Run ``script`` under KERAS_BACKEND=jax on JAX's CPU; its last line is JSON."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CHECK_SCRIPT = """
import json, sys
from dataclasses import asdict
from cifar_tune import runtime
runtime.import_keras()
from cifar_tune.engines import numerics
from cifar_tune.errors import UserError
rows = numerics.check({archs}, cache=False)
try:
    numerics.require(rows)
    error = None
except UserError as e:
    error = str(e)
print(json.dumps({{"version": numerics.backend_version(), "rows": [asdict(r) | {{"ok": r.ok}} for r in rows],
                  "error": error}}))
"""


@pytest.mark.slow
def test_every_architecture_passes_on_jax_cpu():
    """JAX's CPU backend (the test venv's JAX: 0.10.2, which computes bf16 right)."""
    import jax

    if tuple(int(p) for p in jax.__version__.split(".")[:2]) >= (0, 11):
        pytest.skip(f"jax {jax.__version__} on XLA:CPU computes bf16 convolutions wrongly (the test below)")
    out = _jax_check(sys.executable, CHECK_SCRIPT.format(archs="numerics.ARCH_KEYS"))
    assert out["version"].startswith(f"jax {jax.__version__}")
    assert [(r["arch"], r["precision"], r["mode"], r["what"]) for r in out["rows"]] == CELLS
    assert out["error"] is None, out["error"]


@pytest.mark.jax
def test_jax_0_11_bf16_nan_on_xla_cpu_is_detected():
    """Issue 21: jax 0.11.x/0.12.x on XLA:CPU gives scattered NaN/inf in the ResNet's compiled bf16
    conv+relu+pool. Needs such a JAX (CI runs it under Python 3.12 with jax 0.12); skipped otherwise."""
    jax = pytest.importorskip("jax")
    if tuple(int(p) for p in jax.__version__.split(".")[:2]) < (0, 11):
        pytest.skip(f"jax {jax.__version__} < 0.11 computes bf16 right on the CPU (CI runs this under jax 0.12)")
    out = _jax_check(sys.executable, CHECK_SCRIPT.format(archs='["resnet"]'))
    failed = [r for r in out["rows"] if not r["ok"]]
    assert failed and all(r["precision"] == "bf16" for r in failed), out["rows"]
    assert out["error"].startswith("numerics check failed: resnet in bf16, ")
    assert f"jax {jax.__version__}" in out["error"] and "jax 0.10.2" in out["error"]
