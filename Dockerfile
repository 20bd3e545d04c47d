FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=config.settings.production \
    PROMETHEUS_MULTIPROC_DIR=/app/var/metrics
WORKDIR /app

# The CJK font the invoice and claim PDFs embed (dashboards/pdf.py).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-wqy-zenhei && rm -rf /var/lib/apt/lists/*

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN mkdir -p var/metrics && SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost \
    METRICS_TOKEN=collectstatic-only-collectstatic-only python manage.py collectstatic --noinput && rm -f var/metrics/*.db

RUN useradd --create-home grid && chown -R grid /app
USER grid
EXPOSE 8000
# config/gunicorn.py: the workers' counters are summed on /metrics (README, "Watching the service").
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
