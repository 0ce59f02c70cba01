"""Semantic segmentation data (paper Table 3): GTA5, Cityscapes, a generated street-scene set,
the 19-class label table, paired transforms and a resumable loader."""
