# Two images from one file; neither is built twice by docker compose.
#   api (the default: the last stage is the same image): the messaging API as deployed, with only the
#       shipped package (backend_flask/) and its data files, served by backend_flask.server on 4567.
#   tools: the API image plus the local toolbox, for docker compose's `init` and `stream-runner`
#       services only; never deployed. bench/, tests/, bin/ enter neither (see .dockerignore).
FROM python:3.11-slim AS api
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY backend_flask/ backend_flask/
COPY db/sql/ db/sql/
COPY openapi.yml .
# A home of its own that exists: servers and libraries write there (gunicorn its control socket under
# ~/.gunicorn), and a system user gets a home that does not exist by default.
RUN useradd --system --create-home --home-dir /home/cruddur cruddur
ENV HOME=/home/cruddur
USER cruddur
EXPOSE 4567
# Worker processes; a container sees the host's CPUs, not its CPU quota, so say how many.
ENV WEB_CONCURRENCY=2
# Exec form: the server is PID 1 and gets `docker stop`'s SIGTERM (graceful: in-flight requests finish).
CMD ["python", "-m", "backend_flask.server", "--bind", "0.0.0.0:4567"]

# Local tooling for docker compose: seeding (toolbox.compose_init) and the local stream runner, which
# calls the Lambda's handler from aws/lambdas/.
FROM api AS tools
USER root
COPY toolbox/ toolbox/
COPY db/ db/
COPY aws/lambdas/ aws/lambdas/
# Mount points of compose's named volumes, owned by the user so a fresh volume is writable:
# init/ gets the pool ids for the API, stream/ the stream runner's positions.
RUN install -d -o cruddur -g cruddur /var/lib/cruddur/init /var/lib/cruddur/stream
USER cruddur
CMD ["python", "-m", "toolbox.compose_init", "--env-file", "/var/lib/cruddur/init/cognito.env"]

# The default target is the API image: `docker build .` never gives an image with the toolbox in it.
FROM api
