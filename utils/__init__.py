"""The project's building blocks under the entry scripts; PROJECT_ROOT is the folder holding data/, pretrained/
and output/ by default."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
