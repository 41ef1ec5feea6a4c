"""WSGI entry point: the app the server serves (`backend_flask.wsgi:app`)."""

from backend_flask.app import create_app

app = create_app()
