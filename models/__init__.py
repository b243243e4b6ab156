from models.alexnet import AlexNet, load_pretrained
from models.hashnet import HashNet

__all__ = ["AlexNet", "HashNet", "load_pretrained"]
