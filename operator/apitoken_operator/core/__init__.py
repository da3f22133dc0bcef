"""Pure decisions: from what is observed and the time, what to do. No I/O."""
