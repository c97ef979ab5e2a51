#!/usr/bin/env python3
"""A real OTLP trace receiver for the tests, built on the official
OpenTelemetry protocol definitions (the `opentelemetry-proto` package):
OTLP/HTTP (POST /v1/traces, application/x-protobuf) and, when a gRPC port
is asked for, OTLP/gRPC (TraceService/Export, through grpcio).

Every span received is written as one JSON line to OUT: its trace id, span
id, parent span id (hex, "" for a root), name, attributes, and its
resource's service.name and service.instance.id. Once it listens it
prints its ports on one line to standard output ("http PORT, grpc PORT").

usage: otlp_receiver.py OUT [--grpc]
"""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def record(out, request):
    lines = []
    for rs in request.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for span in ss.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "attributes": {a.key: value(a.value) for a in span.attributes},
                    "service_name": resource.get("service.name"),
                    "instance": resource.get("service.instance.id"),
                }))
    with LOCK, open(out, "a") as f:
        for line in lines:
            f.write(line + "\n")


def http_server(out):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            record(out, request)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def grpc_server(out):
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            record(out, request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main():
    out = sys.argv[1]
    open(out, "w").close()
    ports = [f"http {http_server(out)}"]
    keep = None
    if "--grpc" in sys.argv[2:]:
        keep, port = grpc_server(out)
        ports.append(f"grpc {port}")
    print(", ".join(ports), flush=True)
    # Until the test kills it, or its stdin closes.
    sys.stdin.read()


if __name__ == "__main__":
    main()
