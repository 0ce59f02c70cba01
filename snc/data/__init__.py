"""Datasets: CIFAR, the published corrupted layouts, the offline synthetic set, the corruption
generator."""
