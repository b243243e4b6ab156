"""The per-channel mean and std (RGB, pixels scaled to 0..1) of the images every network here was pretrained on
(ImageNet; docs/protocol.md#seed-recipe), the one definition of the input normalisation.

The loaders hand over uint8 pixels and the network normalises them as its first operation (models/hashnet.py), so
the statistics are a contract between the images and the network rather than a step of either: here, in a module
that imports nothing, the network reads them without the data side knowing the network, and export_model.py,
deploy/inference_python/infer.py and the database-code cache (utils/retrieval/search.py) record and check them
without importing the network.
"""
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
