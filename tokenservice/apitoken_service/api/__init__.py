"""HTTP layer: FastAPI routes over the domain."""
