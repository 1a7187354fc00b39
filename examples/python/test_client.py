#!/usr/bin/env python3
"""Runs examples/python/client.py's functions against a real affinity-server (--demo).

    python3 examples/python/test_client.py --server target/release/affinity-server
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen(
            [str(Path(args.server).resolve()), "--demo", "--listen", "127.0.0.1:0", "--no-ingest"],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            addr = None
            for line in server.stdout:
                if line.startswith("listening on "):
                    addr = line.split()[-1]
                    break
            assert addr, "the server did not start"
            with grpc.insecure_channel(addr) as ch:
                grpc.channel_ready_future(ch).result(timeout=30)
                pb2, pb2_grpc = client.generate_stubs()
                services = client.list_services(ch)
                assert "affinity.v1.Recommender" in services and "grpc.health.v1.Health" in services, services
                # The model loads after the listener is up: retry while UNAVAILABLE.
                for _ in range(600):
                    try:
                        items = client.recommend(ch, pb2, pb2_grpc, "user-0001", k=5)
                        break
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        time.sleep(0.1)
                assert len(items) == 5 and all(isinstance(i, str) and i for i, _ in items), items
                try:
                    client.recommend(ch, pb2, pb2_grpc, "user-0001", k=100000)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
                else:
                    raise AssertionError("k=100000 was accepted")
            print(f"ok    python client: reflection lists {len(services)} services; Recommend gave {len(items)} items")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
