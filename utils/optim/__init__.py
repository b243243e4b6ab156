"""Optimisers Paddle does not have: Caffe's SGD solver of the paper recipe."""
