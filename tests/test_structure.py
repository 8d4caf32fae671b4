"""The package's structure as its design promises: imports run one way, small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_tune"
# The layers, lowest first: a module imports only from its own layer or below (a package names all its modules).
# The library never imports the CLI; views read records and never call tuning or comparison (the comparison's
# statistics, plain functions of tables, sit below the views that show them); the runtime (the process: backend,
# devices, signals) sits below the engines that use it.
LAYERS = (
    ("cifar_tune.errors", "cifar_tune.choices", "cifar_tune.progress", "cifar_tune.text"),
    ("cifar_tune.data",),
    ("cifar_tune.models", "cifar_tune.storage"),
    ("cifar_tune.runtime",),
    ("cifar_tune.engines",),
    ("cifar_tune.studies", "cifar_tune.comparison.statistics"),
    ("cifar_tune.views", "cifar_tune.results"),
    ("cifar_tune.tuning", "cifar_tune.comparison"),
    ("cifar_tune.pipeline",),
    ("cifar_tune.api",),
    ("cifar_tune.cli", "cifar_tune.__main__", "cifar_tune"),
)
MAX_MODULE_LINES = 420  # "no module over ~400 lines"
MAX_FUNCTION_LINES = 70  # "no function over ~60" (argparse's parser builder included)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions alike."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(stem + ([node.module] if node.module else []))
            names = [f"{mod}.{a.name}" for a in node.names]
            # `from pkg import module` imports the module (and runs pkg/__init__, which only names its modules)
            targets = names if all(n in known for n in names) else [mod] + names
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not (path.name == "__init__.py" and t.startswith(name + ".")):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(n: str, path: list[str]) -> list[str] | None:
        state[n] = 1
        for m in sorted(g[n]):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m, path + [m])):
                return found
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n, [n])):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    g = graph()
    assert len(g) > 20 and "cifar_tune.tuning.loop" in g
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def layer(module: str) -> int:
    """The index in LAYERS of the entry that holds ``module`` (the longest matching prefix)."""
    matches = [(len(p), i) for i, names in enumerate(LAYERS) for p in names
               if module == p or module.startswith(p + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def test_imports_run_one_way():
    g = graph()
    upward = sorted(f"{n} -> {d}" for n, deps in g.items() for d in deps if layer(d) > layer(n))
    assert upward == [], "imports that run up the layers:\n" + "\n".join(upward)
    # the backend-neutral engine base knows neither the fast engine nor the selector above it
    assert not {d for d in g["cifar_tune.engines.base"] if d.startswith("cifar_tune.engines")}
    # the devices have one module: the engines ask it, nothing else runs nvidia-smi
    callers = sorted(n for n, p in modules().items() if '["nvidia-smi"' in p.read_text())
    assert callers == ["cifar_tune.runtime.devices"]


def test_the_layer_check_finds_the_runtime_importing_an_engine():
    """runtime sits below engines: an import of engines from the runtime is an upward arrow."""
    assert layer("cifar_tune.runtime.backend") < layer("cifar_tune.engines.selector")
    g = {**graph(), "cifar_tune.runtime.backend": {"cifar_tune.engines"}}
    assert [f"{n} -> {d}" for n, deps in g.items() for d in deps if layer(d) > layer(n)] == \
        ["cifar_tune.runtime.backend -> cifar_tune.engines"]



def test_views_write_nothing_to_a_study():
    """Views render; the tuning loop and compare store what they render (the note, figures, artifacts)."""
    writers = ("save_note(", "save_plotly_graph_object(", "upload_artifact(", "set_user_attr(", "set_system_attr(")
    found = sorted(f"{name}: {w}" for name, path in modules().items() if name.startswith("cifar_tune.views")
                   for w in writers if w in path.read_text())
    assert found == []

def test_every_package_says_what_it_owns():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(PACKAGE.parent)} has no docstring saying what it owns"


def exception_classes(tree: ast.AST) -> list[str]:
    """The classes in ``tree`` that derive from an exception (a base named ``...Error``, ``...Exception``,
    ``...Interrupt``, or another exception class of the same package, whatever it is named)."""
    known = {"UserError", "DataError", "InvalidValue", "SpaceError", "WorkersStopped", "TrialFailed", "TakenOver",
             "Diverged", "Terminated"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
            if any(b in known or b.endswith(("Error", "Exception", "Interrupt", "Exit")) for b in bases):
                found.append(node.name)
    return found


def test_exception_classes_are_found_wherever_they_are_written():
    tree = ast.parse("class A(optuna.exceptions.UpdateFinishedTrialError): pass\n"
                     "class B(KeyboardInterrupt): pass\nclass C(errors.UserError): pass\nclass D: pass\n"
                     "def f():\n    class E(Exception): pass\n")
    assert exception_classes(tree) == ["A", "B", "C", "E"]


def test_every_exception_class_is_defined_in_errors_py():
    outside = sorted(f"{name}.{cls}" for name, path in modules().items() if name != "cifar_tune.errors"
                     for cls in exception_classes(ast.parse(path.read_text())))
    assert outside == [], "exception classes outside cifar_tune/errors.py:\n" + "\n".join(outside)
    assert {"UserError", "TakenOver", "Terminated"} <= set(exception_classes(ast.parse(
        modules()["cifar_tune.errors"].read_text())))


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_stay_small(name):
    path = modules()[name]
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES, f"{name}.{node.name}"


def test_tests_and_benchmarks_import_helpers_as_packages():
    """No sys.path edits: tests import tests.helpers.pg/tests.helpers.synthetic, benchmarks run as modules from the
    root. The exceptions are the two entry scripts the issues name, run by path: benchmarks/gpu_check.py (on a lent GPU
    machine) and benchmarks/peers.py (a script beside its package benchmarks/peers/, which takes the module name)."""
    root = PACKAGE.parent
    entries = (root / "benchmarks" / "gpu_check.py", root / "benchmarks" / "peers.py", Path(__file__).resolve())
    edits = [str(p.relative_to(root)) for folder in ("tests", "benchmarks") for p in (root / folder).rglob("*.py")
             if p not in entries
             and ("sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text())]
    assert edits == []
# Printing lives in the CLI: the library reports through cifar_tune.progress. Writing to the standard streams
# outside cifar_tune/cli/ is allowed only here, each with its reason (none is needed today: the runtime's
# flushes of sys.stderr around a file-descriptor swap write nothing).
STREAM_WRITES_ALLOWED: set[tuple[str, int]] = set()


def stream_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each print() call and each direct write to sys.stdout / sys.stderr (``.write``,
    ``.writelines``, or the stream passed as ``file=`` / as an argument, e.g. to a logging handler)."""
    def is_stream(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr", "__stdout__", "__stderr__")
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append((node.lineno, "print()"))
        elif isinstance(node.func, ast.Attribute) and node.func.attr in ("write", "writelines") \
                and is_stream(node.func.value):
            found.append((node.lineno, f"sys.{node.func.value.attr}.{node.func.attr}()"))
        elif any(is_stream(a) for a in [*node.args, *(k.value for k in node.keywords)]):
            found.append((node.lineno, "a standard stream passed to a call"))
    return found


def test_the_stream_finder_finds_prints_and_stream_writes():
    source = ("import sys\nprint('x')\nsys.stderr.write('y')\nprint('z', file=sys.stdout)\nsys.stderr.flush()\n"
              "logging.StreamHandler(sys.stderr)\nlog.print('fine')\n")
    assert [line for line, _ in stream_writes(ast.parse(source))] == [2, 3, 4, 6]


def test_only_the_cli_prints():
    found = []
    for name, path in sorted(modules().items()):
        if name == "cifar_tune.cli" or name.startswith("cifar_tune.cli."):
            continue
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}" for line, what in
                  stream_writes(ast.parse(path.read_text())) if (name, line) not in STREAM_WRITES_ALLOWED]
    assert found == [], "print or write to a standard stream outside cifar_tune/cli/ (report through " \
                        "cifar_tune.progress):\n" + "\n".join(found)


def test_seeding_goes_through_one_function():
    """``keras.utils.set_random_seed`` imports TensorFlow whenever it is installed: only engines.seeding (on the
    TensorFlow backend) and tf_fit (TensorFlow only) call it; everything else seeds through
    ``engines.seeding.set_random_seed`` (a JAX process must never load TensorFlow)."""
    callers = sorted(name for name, path in modules().items() if "keras.utils.set_random_seed(" in path.read_text())
    assert callers == ["cifar_tune.engines.seeding", "cifar_tune.engines.tf_fit"]
