from models.alexnet import AlexNet
from models.hashnet import HashNet
from models.pretrained import load_pretrained

__all__ = ["AlexNet", "HashNet", "load_pretrained"]
