# The Logstream image: the one package with every service; the command picks which one runs
# (`logstream ingest`, `gateway`, `proxy`, `simulate ...`, or `up` for all of them at once).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` reads (see .dockerignore); the source does not stay in the image.
WORKDIR /tmp/logstream-src
COPY pyproject.toml README.md ./
COPY logstream ./logstream
COPY shared ./shared
COPY services ./services
RUN pip install . && rm -rf /tmp/logstream-src

RUN useradd --create-home --uid 10001 --user-group logstream
USER logstream
WORKDIR /home/logstream

# In a container a service must listen on every interface to be reachable; still production
# mode unless LOGSTREAM_ENV=dev is given.
ENV LOGSTREAM_HOST=0.0.0.0
EXPOSE 3000 3001 3002

ENTRYPOINT ["logstream"]
CMD ["--help"]
