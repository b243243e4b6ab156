"""The networks. The package's names are imported on first use, so that models.backbones (the registry, which imports
no Paddle) can be read by utils/config/flags.py without importing Paddle."""
import importlib

_EXPORTS = {"AlexNet": "models.alexnet", "HashNet": "models.hashnet", "load_pretrained": "models.pretrained"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
