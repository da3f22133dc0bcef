"""What each provider kind can do, and the HTTP clients that talk to it."""
