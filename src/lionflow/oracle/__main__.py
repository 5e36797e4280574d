"""Serve the oracle over HTTP: python -m lionflow.oracle --host 127.0.0.1 --port 8000"""
from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lionflow.oracle", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lionflow.oracle").info(
        "oracle LLM serving OpenAI API at http://%s:%d/v1", args.host, args.port)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
