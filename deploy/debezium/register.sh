#!/bin/sh
# Registers the shop connector with Kafka Connect once Connect answers (docker-compose service connect-init).
# Safe to re-run: a connector that already exists (HTTP 409) is left as it is.
set -eu
CONNECT_URL="${CONNECT_URL:-http://connect:8083}"
CONFIG="${CONNECTOR_CONFIG:-/debezium/shop-connector.json}"
until curl -fsS "$CONNECT_URL/connectors" >/dev/null; do
  echo "waiting for Kafka Connect at $CONNECT_URL"
  sleep 3
done
code=$(curl -sS -o /tmp/response -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data @"$CONFIG" "$CONNECT_URL/connectors")
case "$code" in
  201) echo "connector registered" ;;
  409) echo "connector already registered" ;;
  *) echo "registration failed with HTTP $code:"; cat /tmp/response; exit 1 ;;
esac
