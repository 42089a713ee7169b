"""unforget: measure and mitigate catastrophic forgetting in multimodal LLMs."""

__version__ = "0.1.0"
