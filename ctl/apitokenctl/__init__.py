"""`apitokenctl`: a terminal client of the token service's management API (HTTP only)."""
