"""Phase 2 tokenizer: frozen MAE encoder + 32-d projection + CNN decoder (training tasks, API, export)."""

from braing3n.tokenizer.api import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
