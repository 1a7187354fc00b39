#!/usr/bin/env python3
"""A Python client for affinity-server: stubs generated from proto/, reflection, a call.

    pip install grpcio grpcio-tools grpcio-reflection
    python3 examples/python/client.py --addr 127.0.0.1:50051 --user user-0001

The stubs are generated at start from the repository's .proto (grpcio-tools bundles
protoc), so the example never drifts from the API. Pass --api-key when the server
requires keys; --tls-ca for a TLS server.
"""

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def generate_stubs():
    """Generates recommender_pb2 / _pb2_grpc from proto/ and imports them."""
    out = tempfile.mkdtemp(prefix="affinity-stubs-")
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", "affinity/v1/recommender.proto"]
    )
    if code != 0:
        sys.exit("protoc failed on proto/affinity/v1/recommender.proto")
    sys.path.insert(0, out)
    return importlib.import_module("affinity.v1.recommender_pb2"), importlib.import_module("affinity.v1.recommender_pb2_grpc")


def channel(addr, tls_ca=None):
    if tls_ca:
        return grpc.secure_channel(addr, grpc.ssl_channel_credentials(Path(tls_ca).read_bytes()))
    return grpc.insecure_channel(addr)


def list_services(ch):
    """The services the server offers, found by reflection."""
    return sorted(ProtoReflectionDescriptorDatabase(ch).get_services())


def recommend(ch, pb2, pb2_grpc, user, k=5, api_key=None):
    stub = pb2_grpc.RecommenderStub(ch)
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    reply = stub.Recommend(pb2.RecommendRequest(user_id=user, k=k), metadata=metadata, timeout=5)
    return [(item.item_id, item.score) for item in reply.items]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--user", default="user-0001")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--api-key")
    ap.add_argument("--tls-ca")
    args = ap.parse_args()
    pb2, pb2_grpc = generate_stubs()
    with channel(args.addr, args.tls_ca) as ch:
        print("services:", ", ".join(list_services(ch)))
        for item_id, score in recommend(ch, pb2, pb2_grpc, args.user, args.k, args.api_key):
            print(f"{item_id}\t{score:.4f}")


if __name__ == "__main__":
    main()
