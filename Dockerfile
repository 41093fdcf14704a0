# The Tessera licence server in a container: built from this tree in a first stage, run as an unprivileged
# user in the second, its state (SQLite database, keyring) on one volume, healthy once /readyz answers.
#
#   docker build -t tessera-server .
#   docker run -d -p 8400:8400 -v tessera:/var/lib/tessera \
#     -e TESSERA_ISSUER=https://licences.example.com \
#     -e TESSERA_KEY_PASSPHRASE_FILE=/run/secrets/tessera_key_passphrase \
#     --mount type=bind,src=/etc/tessera/passphrase,dst=/run/secrets/tessera_key_passphrase,readonly \
#     tessera-server
#
# The keyring is made once inside the volume: docker run --rm -v tessera:/var/lib/tessera ... tessera-server \
#   tessera-admin keys generate. With PostgreSQL, set TESSERA_DB=postgresql://… instead of the volume's SQLite.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE CHANGELOG.md ./
COPY client_agent client_agent
COPY keys keys
COPY server server
COPY tessera_common tessera_common
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[server]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/tessera --create-home --shell /usr/sbin/nologin tessera
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "tessera[server]" && rm -rf /wheels
USER tessera
WORKDIR /var/lib/tessera
ENV TESSERA_DB=sqlite:////var/lib/tessera/tessera.db \
    TESSERA_KEYS_DIR=/var/lib/tessera/keys \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/tessera"]
EXPOSE 8400
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8400/readyz', timeout=2).status != 200)"]
# The schema is migrated before serving, as the systemd unit's ExecStartPre does.
CMD ["sh", "-c", "tessera-server migrate && exec tessera-server serve --host 0.0.0.0 --port 8400"]
