"""The seed notebook's five Keras classifiers (``architectures``) and the macro metrics that score them
(``metrics``)."""

__all__ = ["architectures", "metrics"]
