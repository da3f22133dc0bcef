"""The Kopf layer and the watches: registrations, daemons, the ApiToken and Secret watches."""
