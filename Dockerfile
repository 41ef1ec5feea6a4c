# The messaging API as deployed: only the shipped package (backend_flask/) and its data files.
# Local tooling (toolbox/, bench/, tests/, bin/) never enters the image: see .dockerignore.
# Served by backend_flask.server (prefork, a greenlet per connection) on 4567.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY backend_flask/ backend_flask/
COPY db/sql/ db/sql/
COPY openapi.yml .
RUN useradd --system --no-create-home cruddur
USER cruddur
EXPOSE 4567
# Worker processes; a container sees the host's CPUs, not its CPU quota, so say how many.
ENV WEB_CONCURRENCY=2
# Exec form: the server is PID 1 and gets `docker stop`'s SIGTERM (graceful: in-flight requests finish).
CMD ["python", "-m", "backend_flask.server", "--bind", "0.0.0.0:4567"]
