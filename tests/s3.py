"""An S3-compatible store for tests: moto in server mode on 127.0.0.1, fake credentials.

Use the ``s3_server`` fixture (one server per session) and :func:`s3_env` in a test::

    def test_x(s3_server, monkeypatch):
        url = s3_env(s3_server, monkeypatch)      # s3://<fresh bucket>/sensei

Workers started as subprocesses inherit the environment, so they reach the same server.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

FAKE_KEY_ID = "AKIASENSEITESTKEY000"
FAKE_SECRET = "sensei-fake-secret-7f3a9c1e5b"
"""The secret key every S3 test uses: a test may look for it where it must never be."""


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto/s3fs at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 in server mode (a real HTTP endpoint) on a free port of 127.0.0.1."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] missing (requirements-dev.txt)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def s3_env(server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str = "sensei") -> str:
    """Point this test (and the workers it starts) at a fresh bucket; return its ``s3://`` URL."""
    import boto3

    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"sensei-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{prefix}"
    monkeypatch.setenv("SENSEI_ARTIFACTS", url)
    return url


def bucket_files(server: S3Server, url: str) -> dict[str, bytes]:
    """Every object under ``url`` (``s3://bucket/prefix``): key relative to the prefix -> bytes."""
    import boto3

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=server.endpoint)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            out[key[len(prefix) + 1 :]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out
