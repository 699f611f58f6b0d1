"""The torch model entry that DreamTeam-style code imports: `from model import GPT, GPTConfig`."""

from dreamteam.config import GPTConfig
from torchport.model import GPT

__all__ = ["GPT", "GPTConfig"]
