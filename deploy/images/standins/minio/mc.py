#!/opt/mc/bin/python
"""Stand-in for MinIO's `mc`, for the calls compose makes: `alias set`, `mb [--ignore-existing]` and `ready`."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

CONFIG = Path(os.environ.get("MC_CONFIG_DIR", Path.home() / ".mc")) / "aliases.json"
DEFAULT = {"local": {"url": "http://127.0.0.1:9000", "user": "", "password": ""}}


def aliases() -> dict[str, dict[str, str]]:
    return {**DEFAULT, **(json.loads(CONFIG.read_text()) if CONFIG.exists() else {})}


def main(argv: list[str]) -> int:
    if argv[:2] == ["alias", "set"] and len(argv) >= 6:
        saved = aliases()
        saved[argv[2]] = {"url": argv[3], "user": argv[4], "password": argv[5]}
        CONFIG.parent.mkdir(parents=True, exist_ok=True)
        CONFIG.write_text(json.dumps(saved))
        print(f"Added `{argv[2]}` successfully.")
        return 0
    if argv[:1] == ["ready"] and len(argv) == 2:
        try:
            urllib.request.urlopen(aliases()[argv[1]]["url"] + "/", timeout=3)
        except urllib.error.HTTPError:
            pass  # any S3 answer (403 for an anonymous call) means the server is up
        except OSError as err:
            print(f"not ready: {err}", file=sys.stderr)
            return 1
        return 0
    if argv[:1] == ["mb"]:
        from minio import Minio

        ignore = "--ignore-existing" in argv or "-p" in argv
        alias, _, bucket = next(a for a in argv[1:] if not a.startswith("-")).partition("/")
        target = aliases()[alias]
        url = urlsplit(target["url"])
        client = Minio(
            url.netloc, access_key=target["user"], secret_key=target["password"], secure=url.scheme == "https"
        )
        if client.bucket_exists(bucket):
            if not ignore:
                print(f"mc: bucket {bucket} exists", file=sys.stderr)
                return 1
        else:
            client.make_bucket(bucket)
        print(f"Bucket created successfully `{alias}/{bucket}`.")
        return 0
    print(f"mc stand-in: unsupported call {' '.join(argv)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
