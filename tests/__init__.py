"""cifar-tune's tests. A package, so that tests and benchmarks import the shared helpers by name
(``tests.helpers.synthetic``, ``tests.helpers.pg``, ...) without editing
``sys.path``: pytest puts the checkout's root first on it (rootdir of a test package), and the benchmarks run as
modules from the root (``python -m benchmarks.races``)."""
