"""The Kopf layer: registrations, daemons, the managed-Secret watch."""
