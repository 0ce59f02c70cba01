"""Reports: collect runs, compare with the paper's published numbers, plot."""
