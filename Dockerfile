# The messaging API as deployed: only the shipped package (backend_flask/) and its data files.
# Local tooling (toolbox/, bench/, tests/, bin/) never enters the image: see .dockerignore.
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
CMD ["gunicorn", "backend_flask.wsgi:app", "--bind", "0.0.0.0:4567", "--workers", "2", \
     "--worker-class", "gthread", "--threads", "8", "--access-logfile", "-"]
