"""The Cruddur messaging backend: what ships in the API image and the stream Lambda.

Importing the package builds nothing; `backend_flask.app.create_app()` builds
the Flask app and `backend_flask.wsgi:app` is the one the server serves.
Data access (`backend_flask.lib`) never imports Flask.
"""
