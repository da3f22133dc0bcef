"""The workspace policy: the operator's own credential and its protection."""
