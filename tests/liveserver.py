"""The app served by uvicorn in a thread on a free port of 127.0.0.1: the API and page tests' live server, and the
page benchmark's (bench/web.py)."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from presa.web.app import create_app
from tests.pgserver import free_port

KEY = b"presa-tests-secret-key-0123456789abcdef"
"""The secret key of the test worlds' app (pseudonyms, sessions)."""


class LiveServer:
    """uvicorn serving the app in a thread, on a free port of 127.0.0.1."""

    def __init__(self, database_url: str, *, key: bytes = KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(database_url, key=key), host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="presa-api", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)
