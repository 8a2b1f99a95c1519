"""lossbench: compare loss functions, models and recipes for class-imbalanced image data."""

__version__ = "0.1.0"
