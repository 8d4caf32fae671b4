"""What a study is made of, as data: search spaces (``spaces``), presets and the settings they build
(``presets``), the one range table every input is checked against (``validate``), the built-in files
(``resources``), the typed records a study, a trial and a comparison keep in the storage (``records``), and
what a storage holds, read back by role (``catalog``)."""

__all__ = ["catalog", "presets", "records", "resources", "spaces", "validate"]
