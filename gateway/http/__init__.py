"""The HTTP layer, FastAPI only: the app factory, a router per front, admin, usage, console."""

from gateway.http.app import create_app

__all__ = ["create_app"]
