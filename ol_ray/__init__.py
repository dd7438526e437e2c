"""ol_ray: online learning of Hugging Face language models from a live stream, on Ray."""

__version__ = "0.1.0"
