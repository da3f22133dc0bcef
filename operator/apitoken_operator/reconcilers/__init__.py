"""One run per kind against the cluster: observe, decide, act, record."""
