"""Dataset formats, validation and the built-in quickstart datasets."""

from sage_ft.data.builtin import BUILTIN_TASKS, builtin_dataset_path
from sage_ft.data.formats import Conversation, detect_format, to_conversation
from sage_ft.data.validate import ValidationReport, load_conversations, validate_bytes, validate_file

__all__ = [
    "BUILTIN_TASKS",
    "Conversation",
    "ValidationReport",
    "builtin_dataset_path",
    "detect_format",
    "load_conversations",
    "to_conversation",
    "validate_bytes",
    "validate_file",
]
