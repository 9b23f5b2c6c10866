"""``python -m dashboard --collector tcp://127.0.0.1:5558 --host 127.0.0.1 --port 8050 --interval 15``"""
from __future__ import annotations

import argparse
import sys

from dashboard.app import serve
from dashboard.client import DEFAULT_ENDPOINT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description="The acestep-viz dashboard.")
    parser.add_argument("--collector", default=DEFAULT_ENDPOINT, help="the collector's query endpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--interval", type=float, default=15.0, help="default update interval, seconds")
    parser.add_argument("--url-prefix", default="/", help="serve under this path, e.g. /viz/")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be greater than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve(collector=args.collector, host=args.host, port=args.port, interval_s=args.interval,
          url_prefix=args.url_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
