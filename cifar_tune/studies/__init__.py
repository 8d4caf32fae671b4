"""What a study is made of, as data: search spaces (``spaces``), presets and the settings they build
(``presets``), the one range table every input is checked against (``validate``), the built-in files
(``resources``), and what a storage holds, read back by role (``catalog``)."""

__all__ = ["catalog", "presets", "resources", "spaces", "validate"]
