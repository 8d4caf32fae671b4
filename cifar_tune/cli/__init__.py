"""The command line: ``cifar-tune COMMAND`` parses, builds settings, calls the library and prints (``main``);
``doctor`` checks the machine."""

from cifar_tune.cli.commands import build_parser, main, optimize_settings, run_plan

__all__ = ["build_parser", "main", "optimize_settings", "run_plan"]
