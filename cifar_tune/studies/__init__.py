"""What a study is made of, as data: search spaces (``spaces``), the settings model of every command
(``settings``: each setting declared once), presets and the optimize settings they build (``presets``), the checks
every input passes (``validate``), the built-in files (``resources``), the typed records a study, a trial and a
comparison keep in the storage (``records``), and what a storage holds, read back by role (``catalog``)."""

__all__ = ["catalog", "presets", "records", "resources", "settings", "spaces", "validate"]
