"""The data side: list files and the image dataset, transforms, the training samplers, the decoded-image caches
and the generated toy set. Knows nothing of the network."""
