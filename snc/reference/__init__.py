"""Reference pipelines: code written the way the public repositories run it.

snc does not train with them. The benchmarks (``scripts/bench.py``) time them against snc's
pipelines, and the tests compare snc's batched ops with them. A reference depends on snc (it
builds snc's models and runs their SelfNorm and CrossNorm units the official way); nothing in
``snc.augment``, ``snc.engine``, ``snc.tasks``, ``snc.models`` or ``snc.ops`` imports it.

- :mod:`.cifar`: CIFAR training (PIL transforms, PIL AugMix in a 2-worker DataLoader, fp32,
  SelfNorm with the official unfused ops): google-research/augmix ``cifar.py`` and
  ``augmentations.py``, on which the official CrossNorm/SelfNorm CIFAR scripts build.
- :mod:`.fixmatch`: FixMatch training (per-sample PIL weak/strong views, RandAugmentMC and
  Cutout, ``interleave``, the ``state_dict`` EMA): kekmodel/FixMatch-pytorch ``train.py``,
  ``dataset/cifar.py``, ``dataset/randaugment.py``, ``models/ema.py``.
- :mod:`.segmentation`: segmentation training (float32 OpenCV transforms per sample) and
  evaluation (centre crop; sliding window + flip, one window per forward): hszhao/semseg
  ``util/transform.py``, ``tool/train.py``, ``tool/test.py``.
- :mod:`.text`: the GloVe load of a run without a vector cache (the text file parsed):
  bentrevett/pytorch-sentiment-analysis notebook 4.
"""
