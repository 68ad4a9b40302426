# The mobilise worker image. Configured only through environment variables (see
# docker-compose.yml); `docker run IMAGE` starts a worker, `docker run IMAGE topics create`
# creates the topics.
FROM python:3.11-slim

# Logs reach `docker logs` at once; no .pyc litter in the image.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# Every dependency ships a manylinux wheel, so the slim image needs no compiler.
RUN pip install --no-cache-dir . \
    && rm -rf /src/build /src/*.egg-info

# A fixed non-root uid, so files it writes to bind-mounted outboxes have a predictable owner.
RUN groupadd --system --gid 10001 mobilise \
    && useradd --system --uid 10001 --gid mobilise --home-dir /home/mobilise --create-home \
       --shell /usr/sbin/nologin mobilise \
    && mkdir -p /data /outbox \
    && chown mobilise:mobilise /data /outbox

# Absolute paths: the defaults (./data, ./outbox) would depend on the working directory.
ENV MOBILISE_DATA_DIR=/data \
    MOBILISE_OUTBOX_DIR=/outbox \
    MOBILISE_LOG_FORMAT=json

USER mobilise
WORKDIR /home/mobilise

ENTRYPOINT ["mobilise"]
CMD ["worker"]
