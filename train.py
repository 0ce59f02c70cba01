#!/usr/bin/env python
"""snc entry point: compose the Hydra config and call the engine, ``snc.engine.run(cfg)``.

    python train.py                                   # synthetic data, WRN-40-2
    python train.py experiment=demo                   # the offline demo (minutes on CPU)
    python train.py dataset=cifar100 backbone=wrn40_2 sn=on cn=on
    python train.py -m experiment=demo cn.prob=0.25,0.5
"""

from typing import Optional

import hydra
from omegaconf import DictConfig

import snc.config  # noqa: F401  (registers the config schemas before Hydra composes)
from snc.cli.launch import launch
from snc.config import CONFIG_DIR
from snc.console import fail
from snc.engine import run


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    try:
        results = run(cfg)
    except Exception as err:  # configuration and input errors: one line, exit 2
        fail(err, cfg)
    return results.get("mce", results.get("clean/error"))  # for sweepers that minimise


if __name__ == "__main__":
    launch(main, CONFIG_DIR, "train")  # Hydra's own errors (unknown key, ...): one line, exit 2
