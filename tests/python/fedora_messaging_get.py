"""Reads one message from a queue with pika and prints, as JSON, what a fedora-messaging
consumer looks at, with the Python type of each header value.

Usage: fedora_messaging_get.py QUEUE
"""
import json, sys
import pika
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
channel = connection.channel()
method, properties, body = channel.basic_get(sys.argv[1], auto_ack=True)
if method is None:
    sys.exit("the queue is empty")
print(json.dumps({
    "routing_key": method.routing_key,
    "body": body.decode("utf-8"),
    "content_type": properties.content_type,
    "content_encoding": properties.content_encoding,
    "delivery_mode": properties.delivery_mode,
    "priority": properties.priority,
    "message_id": properties.message_id,
    "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in properties.headers.items()},
    "types": {k: type(v).__name__ for k, v in properties.headers.items()},
}))
connection.close()
