"""What a finished (or killed) ``cifar-tune optimize`` left in its storage: the parts read this, not its output."""

from __future__ import annotations

from pathlib import Path


def finished_trials(db: Path, study_name: str) -> dict[str, int]:
    """Finished trials of the stored study ``study_name`` in the SQLite file ``db``, by state.

    Keys are Optuna's state names in lower case (``complete``, ``pruned``, ``fail``), present only when non-zero;
    trials still running when their command was killed are not counted. Every worker's trials are there, failed
    ones included. ``{}`` when the command stopped before it created the file, its tables or the study. Reads
    only: the storage is opened without creating tables or checking the schema version.
    """
    if not db.is_file():
        return {}
    import optuna  # here, not at the top: the other parts and the tests of the runner do without it
    import sqlalchemy.exc

    storage = None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_compatibility_check=True,
                                             skip_table_creation=True)
        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return {}
    finally:
        if storage is not None:
            storage.engine.dispose()
    counts: dict[str, int] = {}
    for trial in trials:
        if trial.state.is_finished():
            state = trial.state.name.lower()
            counts[state] = counts.get(state, 0) + 1
    return counts
