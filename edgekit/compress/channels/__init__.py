"""Channel structure: the traced channel groups of a graph and structured pruning on them."""
