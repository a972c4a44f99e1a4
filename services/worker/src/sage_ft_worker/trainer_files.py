"""The files the worker and its trainer child talk through, in the child's work directory.

A module of its own so that the worker process reads these names without importing the training stack (torch,
transformers, PEFT): ``trainer_main`` runs only in the child, and the worker's start-up stays a second or two.
"""

EVENTS = "events.jsonl"  # progress, one JSON object a line, appended by the trainer
STOP = "STOP"  # appears when the worker asks the trainer to stop (holds the request's wall time)
RESULT = "result.json"  # written once, atomically, when the trainer ends
STAGED = "staged"  # hard-linked copies of checkpoints, handed to the worker to upload
