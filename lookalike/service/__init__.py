"""The HTTP service: the FastAPI app, its routes and settings."""
