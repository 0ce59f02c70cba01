"""Datasets and loaders: CIFAR, ImageNet, npz arrays, the offline synthetic set, segmentation
and text corpora, the dataset registry and downloads with checksums. The corruption generator
and corrupted-set layouts are :mod:`snc.corruptions`, the published shift sets
:mod:`snc.shifts`, the device augmentations :mod:`snc.augment`."""
