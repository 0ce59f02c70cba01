"""Training: ``run(cfg)`` builds data, model, objective and trackers from a config.

``snc.train.run`` is the function; the module that defines it is ``sys.modules["snc.train.run"]``
(``importlib.import_module("snc.train.run")``).
"""

from snc.train.run import run

__all__ = ["run"]
