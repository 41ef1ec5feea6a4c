"""WSGI entry point: gunicorn backend_flask.wsgi:app"""

from backend_flask import create_app

app = create_app()
