#!/bin/sh
# One image, four roles: web | worker | beat | emulator (anything else is run as given).
# Every role runs Django's system checks first, so a missing or malformed
# FIELD_ENCRYPTION_KEY (bill_integration.E001/E002) stops the container before it serves.
set -eu

role="${1:-web}"

checks() {
    python manage.py check --deploy --fail-level ERROR
}

case "$role" in
    web)
        checks
        # Safe to run on every start: Django takes a lock-free, idempotent path when
        # nothing is pending. Run a single web replica while migrations are applied.
        python manage.py migrate --noinput
        exec gunicorn project.wsgi:application \
            --bind "0.0.0.0:${PORT:-8000}" \
            --workers "${WEB_CONCURRENCY:-3}" \
            --timeout "${GUNICORN_TIMEOUT:-60}" \
            --access-logfile - \
            --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}"
        ;;
    worker)
        checks
        # Refreshing sessions is I/O-bound: threads, 16 per worker by default; one worker
        # container per core with a share of them (docs/how-to/celery.md, bench/sweep.py).
        exec celery -A project worker --loglevel "${LOG_LEVEL:-INFO}" \
            --pool threads --concurrency "${WORKER_CONCURRENCY:-16}"
        ;;
    beat)
        checks
        exec celery -A project beat --loglevel "${LOG_LEVEL:-INFO}" \
            --scheduler django_celery_beat.schedulers:DatabaseScheduler \
            --pidfile /tmp/celerybeat.pid
        ;;
    emulator)
        # The fake BILL for demos and staging: no database, no secrets of its own.
        exec python manage.py bill_emulator --host 0.0.0.0 --port "${BILL_EMULATOR_PORT:-8111}" \
            --skip-checks
        ;;
    *)
        exec "$@"
        ;;
esac
