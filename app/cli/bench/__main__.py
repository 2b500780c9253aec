"""Child processes of ``hookline bench``: ``python -m app.cli.bench loadgen|bare …``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.cli.bench")
    sub = p.add_subparsers(dest="role", required=True)
    lg = sub.add_parser("loadgen", help="HTTP/1.1 keep-alive load on 127.0.0.1 (prints JSON)")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--path", default="/webhooks/bench")
    lg.add_argument("--count", type=int, required=True, help="distinct pre-signed requests")
    lg.add_argument("--prefix", required=True, help="delivery ids are PREFIX-0 … PREFIX-(count-1)")
    lg.add_argument("--concurrency", type=int, required=True)
    lg.add_argument("--duration", type=float, required=True)
    lg.add_argument("--warmup", type=float, default=0.0)
    lg.add_argument("--cycle", action="store_true", help="start over when the requests run out")
    lg.add_argument("--rate", type=float, help="paced: this many requests/s in all (latency from the due time)")
    lg.add_argument("--total", type=int, help="stop after this many requests")
    lg.add_argument("--server-pid", type=int, help="process whose CPU use is sampled over the measured window")
    fm = sub.add_parser("fakemodel", help="a minimal Messages API answering after --delay seconds")
    fm.add_argument("--port", type=int, required=True)
    fm.add_argument("--delay", type=float, default=0.0)
    bare = sub.add_parser("bare", help="the bare Starlette baseline under uvicorn")
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--processes", type=int, default=1, help="uvicorn processes on the port, as hookline web's")
    args = p.parse_args(argv)
    if args.role == "loadgen":
        from app.cli.bench.loadgen import main as loadgen

        return loadgen(args)
    if args.role == "fakemodel":
        from app.cli.bench.fakemodel import serve as fake

        fake(args.port, args.delay)
        return 0
    from app.cli.bench.bare import serve

    serve(args.host, args.port, processes=args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
