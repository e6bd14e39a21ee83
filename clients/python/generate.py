#!/usr/bin/env python3
"""Regenerates the protobuf and gRPC stubs in modelwatch/v1/ from ../../proto.

    python3 generate.py            # needs grpcio-tools
    python3 generate.py --check    # exits 1 when the checked-in stubs are stale

The stubs are checked in so that `pip install ./clients/python` needs only grpcio and
protobuf; tests/test_stubs.py runs --check.
"""
import argparse
import filecmp
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO = "modelwatch/v1/modelwatch.proto"
FILES = ["modelwatch_pb2.py", "modelwatch_pb2.pyi", "modelwatch_pb2_grpc.py"]


def generate(out):
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", PROTO])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if not a.check:
        generate(HERE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        stale = [f for f in FILES if not filecmp.cmp(os.path.join(tmp, "modelwatch", "v1", f), os.path.join(HERE, "modelwatch", "v1", f), shallow=False)]
    if stale:
        sys.exit(f"stale stubs: {stale}; run `python3 clients/python/generate.py`")
    print("stubs are up to date")


if __name__ == "__main__":
    main()
