#!/usr/bin/env python3
"""Runs a steerer rollout to its end from Python, with stubs generated from proto/.

Generate the stubs, then run:

    python3 -m grpc_tools.protoc -I proto --python_out=STUBS --grpc_python_out=STUBS \
        proto/steerer/v1/rollout.proto
    python3 tests/python/rollout.py --stubs STUBS --server 127.0.0.1:50051 \
        --namespace test --target podinfo --image podinfod=ghcr.io/stefanprodan/podinfo:6.1.0

It starts the rollout, follows WatchRollout (resuming with from_sequence if the stream
breaks), and prints one JSON object per line: the started rollout, every event, and the final
rollout. Exit status: 0 when the canary was promoted, 1 when the rollout ended otherwise, 2 on
bad usage, 3 on a gRPC error.
"""

import argparse
import json
import sys
import time

TERMINAL_EVENTS = {"EVENT_TYPE_SUCCEEDED", "EVENT_TYPE_ROLLED_BACK", "EVENT_TYPE_ABORTED",
                   "EVENT_TYPE_FAILED"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="directory holding the generated stubs")
    parser.add_argument("--server", required=True, help="HOST:PORT of the steerer server")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--image", action="append", default=[], metavar="CONTAINER=IMAGE")
    parser.add_argument("--step-weight", type=int, default=None)
    parser.add_argument("--max-weight", type=int, default=None)
    parser.add_argument("--interval", type=float, default=None, help="seconds")
    parser.add_argument("--threshold", type=float, default=None, help="percent")
    parser.add_argument("--max-failed-checks", type=int, default=None)
    parser.add_argument("--request-id", default="")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the rollout to end")
    return parser.parse_args()


def emit(kind, message, json_format):
    record = json_format.MessageToDict(message, preserving_proto_field_name=True)
    record["kind"] = kind
    print(json.dumps(record, sort_keys=True), flush=True)


def main():
    args = parse_args()
    sys.path.insert(0, args.stubs)
    import grpc  # noqa: E402  (after the stubs path is known)
    from google.protobuf import json_format  # noqa: E402
    from steerer.v1 import rollout_pb2 as pb  # noqa: E402
    from steerer.v1 import rollout_pb2_grpc as pb_grpc  # noqa: E402

    images = {}
    for item in args.image:
        container, sep, image = item.partition("=")
        if not sep or not container or not image:
            print(f"--image wants CONTAINER=IMAGE, got {item!r}", file=sys.stderr)
            return 2
        images[container] = image

    analysis = pb.Analysis()
    if args.step_weight is not None:
        analysis.step_weight = args.step_weight
    if args.max_weight is not None:
        analysis.max_weight = args.max_weight
    if args.interval is not None:
        analysis.interval.FromNanoseconds(int(args.interval * 1e9))
    if args.threshold is not None:
        analysis.success_rate_threshold = args.threshold
    if args.max_failed_checks is not None:
        analysis.max_failed_checks = args.max_failed_checks

    channel = grpc.insecure_channel(args.server)
    stub = pb_grpc.RolloutServiceStub(channel)
    try:
        rollout = stub.StartRollout(pb.StartRolloutRequest(
            namespace=args.namespace, target=args.target, images=images, analysis=analysis,
            request_id=args.request_id), timeout=30)
    except grpc.RpcError as err:
        print(f"StartRollout failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return 3
    emit("rollout", rollout, json_format)

    deadline = time.monotonic() + args.timeout
    last = 0
    finished = False
    while not finished:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"rollout {rollout.id} did not end within {args.timeout}s", file=sys.stderr)
            return 3
        try:
            stream = stub.WatchRollout(
                pb.WatchRolloutRequest(id=rollout.id, from_sequence=last + 1), timeout=remaining)
            for event in stream:
                if event.sequence <= last:
                    continue
                if event.sequence != last + 1:
                    print(f"gap: expected event {last + 1}, got {event.sequence}",
                          file=sys.stderr)
                    return 3
                last = event.sequence
                emit("event", event, json_format)
                if pb.EventType.Name(event.type) in TERMINAL_EVENTS:
                    finished = True
                    break
            else:
                # The server ended the stream; ask whether the rollout is over.
                current = stub.GetRollout(pb.GetRolloutRequest(id=rollout.id), timeout=30)
                finished = pb.Phase.Name(current.phase) in {
                    "PHASE_SUCCEEDED", "PHASE_ROLLED_BACK", "PHASE_ABORTED", "PHASE_FAILED"}
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                              grpc.StatusCode.UNKNOWN):
                time.sleep(0.5)
                continue
            print(f"WatchRollout failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return 3

    final = stub.GetRollout(pb.GetRolloutRequest(id=rollout.id), timeout=30)
    emit("final", final, json_format)
    return 0 if final.phase == pb.PHASE_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
