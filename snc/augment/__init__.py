"""Batch augmentations on the device: the Table 1 baselines (:mod:`.baselines`: Cutout, Mixup,
CutMix, AutoAugment, PGD adversarial training), AugMix (:mod:`.augmix`) and FixMatch's
RandAugmentMC (:mod:`.randaugment`), each equal to its PIL reference (:mod:`snc.reference`)
where the reference is deterministic (tested)."""
