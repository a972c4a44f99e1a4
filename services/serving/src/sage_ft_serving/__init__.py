"""sage-ft serving: starts model servers from object storage, hot-loads LoRA adapters, proxies OpenAI requests."""
