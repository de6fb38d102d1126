"""Training-file formats other than OpenAI's chat JSONL, rendered at upload by the provider that needs them."""
