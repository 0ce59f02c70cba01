"""``python -m snc.tracking sync <run_dir>``: see :mod:`snc.tracking.sync`."""

from snc.tracking.sync import main

raise SystemExit(main())
