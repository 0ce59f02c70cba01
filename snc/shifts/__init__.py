"""The published distribution-shift test sets: where each comes from, how it is laid out on
disk, which model heads it fits, and how to download, find and open it.

One registry entry (:class:`Shift`) per test set, registered by name like the datasets
(``register_shift``); ``list_shifts()`` / ``get_shift(name)`` look them up:

- corruption grids (``kind="corruptions"``: corruptions x 5 severities): ``cifar10c``,
  ``cifar100c``, ``imagenetc`` (Hendrycks & Dietterich) and ``cifar10c_bar``,
  ``cifar100c_bar``, ``imagenetc_bar`` (Mintun et al.); read by :mod:`snc.corruptions.sets`.
- single test sets (``kind="single"``), opened by :func:`open_single`: ``cifar10_1``,
  ``imagenet_r``, ``imagenet_a``, ``imagenet_sketch``, ``imagenet_v2`` (matched frequency; also
  ``imagenet_v2_threshold`` and ``imagenet_v2_topimages``).

Checksums are the published ones only (each entry's ``checksum_source`` says where from); a set
without one is downloaded unverified and says so when opened. Class lists live in
``snc/shifts/classes/`` (see each file's ``source``); labels of ImageNet-R / -A are in the set's
own 200 classes and ``class_subset`` gives their columns in a 1000-class head.

Command line::

    python -m snc.shifts list
    python -m snc.shifts download imagenet_r --data-dir data
"""

from snc.shifts.entries import (  # noqa: F401
    DOMAIN_CLASSES,
    DOMAINS,
    DOWNLOAD_COMMAND,
    Shift,
    c_bar_severities,
    check_fits,
    get_shift,
    imagenet_wnids,
    list_shifts,
    register_shift,
    shifts_for,
    subset_indices,
)
from snc.shifts.fetch import download, locate, severity_dir  # noqa: F401
from snc.shifts.opener import SingleSet, open_single  # noqa: F401
