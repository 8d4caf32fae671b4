"""What a finished (or killed) ``cifar-tune optimize`` left in its storage: the parts read this, not its output."""

from __future__ import annotations

from pathlib import Path


def _trials(db: Path, study_name: str) -> list:
    """The stored trials of ``study_name`` in the SQLite file ``db`` (``[]`` without file, tables or study).
    Reads only: the storage is opened without creating tables or checking the schema version."""
    if not db.is_file():
        return []
    import optuna  # here, not at the top: the other parts and the tests of the runner do without it
    import sqlalchemy.exc

    storage = None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_compatibility_check=True,
                                             skip_table_creation=True)
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return []
    finally:
        if storage is not None:
            storage.engine.dispose()


def compiles(db: Path, study_name: str) -> dict[str, float]:
    """What the study's trials compiled, from each trial's ``engine_info`` (the fast engine on JAX records the
    executables it compiled and the seconds): ``{"compiles": count, "compile_seconds": seconds}``; ``{}`` when no
    trial recorded it (stock fit, or nothing stored)."""
    infos = [t.user_attrs.get("engine_info") for t in _trials(db, study_name)]
    infos = [i for i in infos if isinstance(i, dict) and "compiled" in i]
    if not infos:
        return {}
    return {"compiles": sum(len(i["compiled"]) for i in infos),
            "compile_seconds": round(sum(i.get("compile_seconds") or 0 for i in infos), 2)}


def finished_trials(db: Path, study_name: str) -> dict[str, int]:
    """Finished trials of the stored study ``study_name`` in the SQLite file ``db``, by state.

    Keys are Optuna's state names in lower case (``complete``, ``pruned``, ``fail``), present only when non-zero;
    trials still running when their command was killed are not counted. Every worker's trials are there, failed
    ones included. ``{}`` when the command stopped before it created the file, its tables or the study. Reads
    only: the storage is opened without creating tables or checking the schema version.
    """
    trials = _trials(db, study_name)
    counts: dict[str, int] = {}
    for trial in trials:
        if trial.state.is_finished():
            state = trial.state.name.lower()
            counts[state] = counts.get(state, 0) + 1
    return counts
