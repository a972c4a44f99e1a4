#!/usr/bin/env bash
# Build the offline base image: Debian bookworm with its Python 3.11, made with debootstrap and `docker import`ed.
#
# Why: no image registry can be reached on the project's build machines, so `python:3.11-slim-bookworm` cannot be
# pulled. Every Dockerfile keeps `ARG PYTHON_IMAGE` defaulting to the official image; tests and offline builds pass
# this one instead. It has what the official image gives the Dockerfiles: `python` (a symlink to python3), venv,
# pip inside venvs, useradd, and the host's CA bundle so that pip in a build reaches PyPI as the host does.
#
# Usage: deploy/images/build-base.sh [TAG]      (default sage-ft/base:bookworm-py311; skipped if it exists,
#        FORCE=1 rebuilds; MIRROR=... picks the Debian mirror)
set -euo pipefail
TAG=${1:-sage-ft/base:bookworm-py311}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
root=$(mktemp -d /var/tmp/sage-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
# The host's CA bundle: on a host behind a TLS-inspecting proxy it holds the proxy's CA too.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# Slim the image as the official one is: no apt lists, docs or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/* \
       "$root"/usr/share/locale/*
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" >"$root/etc/apt/sources.list"
tar -C "$root" -c . | docker import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["python3"]' - "$TAG" >/dev/null
echo "built base image $TAG"
