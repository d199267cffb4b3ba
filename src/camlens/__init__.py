"""camlens: Grad-CAM and its family of visual explanations."""

__version__ = "0.1.0"
