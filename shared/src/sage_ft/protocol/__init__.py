"""The HTTP contract both services speak (the gateway publicly, serving internally): typed request and response
models in OpenAI's shapes. Pure pydantic, no web framework."""
