"""Command-line tools (also installed as ``snc-*`` console scripts; ``scripts/*.py`` call them)."""
