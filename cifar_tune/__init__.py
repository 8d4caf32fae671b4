"""cifar-tune: Optuna studies around the five Keras CIFAR-10 classifiers of a course notebook."""

__version__ = "0.1.0"
