"""A ZeroMQ peer (pyzmq) that tests/zmq.rs drives over stdin and stdout.

One JSON command per input line, one JSON reply per output line:
  {"op": "socket", "type": "pub|sub|push|pull", "bind": [...], "connect": [...],
   "subscribe": ["prefix", ...]}                 -> {"ok": true}
  {"op": "send", "frames": [hex, ...]}        -> {"ok": true} or {"error": "..."}
  {"op": "recv", "timeout_ms": N}                -> {"frames": [hex, ...]} or {"timeout": true}
  {"op": "close"}                                -> {"ok": true}
"""

import json
import sys

import zmq

TYPES = {"pub": zmq.PUB, "sub": zmq.SUB, "push": zmq.PUSH, "pull": zmq.PULL}


def main():
    context = zmq.Context()
    socket = None
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "socket":
                socket = context.socket(TYPES[command["type"]])
                socket.setsockopt(zmq.LINGER, 1000)
                for prefix in command.get("subscribe", []):
                    socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
                for endpoint in command.get("bind", []):
                    socket.bind(endpoint)
                for endpoint in command.get("connect", []):
                    socket.connect(endpoint)
                reply = {"ok": True}
            elif op == "send":
                frames = [bytes.fromhex(frame) for frame in command["frames"]]
                socket.send_multipart(frames, flags=zmq.NOBLOCK)
                reply = {"ok": True}
            elif op == "recv":
                if socket.poll(command.get("timeout_ms", 0)):
                    frames = socket.recv_multipart()
                    reply = {"frames": [frame.hex() for frame in frames]}
                else:
                    reply = {"timeout": True}
            elif op == "close":
                socket.close()
                socket = None
                reply = {"ok": True}
            else:
                reply = {"error": "unknown op " + op}
        except zmq.ZMQError as error:
            reply = {"error": str(error)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
