#!/usr/bin/env bash
# Regenerate the protobuf classes zoo ships (needs grpcio-tools, in the [test] extra):
#   zoo/spec_pb2.py          from specs/zoo.proto (the spec language)
#   converters/caffe_pb2.py  from converters/caffe_proto/caffe.proto (BVLC Caffe's, as brocolli-caffe ships it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -Ispecs --python_out=zoo specs/zoo.proto && mv zoo/zoo_pb2.py zoo/spec_pb2.py
"$PY" -m grpc_tools.protoc -Iconverters/caffe_proto --python_out=converters converters/caffe_proto/caffe.proto
