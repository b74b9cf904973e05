"""harness: prompting and ecological evaluation of language models, side by side."""

__version__ = "0.1.0"
