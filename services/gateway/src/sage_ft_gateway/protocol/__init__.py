"""The gateway's API contract, one module per feature (as vLLM's ``protocol.py``): typed request and response models
in OpenAI's shapes, with sage-ft's extensions. Responses allow extra fields, so a newer field never breaks a client;
every declared field is what the gateway really sends."""
